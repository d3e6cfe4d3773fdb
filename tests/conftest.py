"""Shared fixtures and helpers of the test suite."""
import os
import sys

import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmtools import cache, states

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)

from openmm_ddpm.testsystems import DoubleWell2D  # noqa: E402


@pytest.fixture(scope="session")
def double_well():
    return DoubleWell2D()


@pytest.fixture
def reference_context_cache():
    return cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))


def run_chain(system, move, temperature, n_iterations, context_cache, start_well=0):
    """Apply ``move`` n times at one temperature; return the well index after each."""
    thermodynamic_state = states.ThermodynamicState(system.system, temperature)
    sampler_state = states.SamplerState(system.minimum_positions(start_well))
    wells = np.empty(n_iterations, dtype=int)
    for i in range(n_iterations):
        move.apply(thermodynamic_state, sampler_state, context_cache)
        wells[i] = system.well_index(sampler_state.positions.value_in_unit(unit.nanometer))[0]
    return wells
