"""Proof on the model system: augmented PT is exact where plain PT cannot equilibrate.

The setup is that of openmm_ddpm.app.double_well (which
examples/double_well_remd.py runs, so test and example cannot drift apart): no MD barrier crossing at any temperature, one
left-well configuration among four replicas at the start. Plain PT conserves
that count and cannot reach the exact 300 K population; the augmented
sampler's exact proposals can.
"""
import numpy as np
import openmm
import pytest
import torch
from openmmtools import cache

from openmm_ddpm.app import double_well as example

N_ITERATIONS, FREEZE_AFTER, BURN_IN = 320, 80, 40


@pytest.mark.slow
def test_augmented_sampler_is_exact_where_plain_parallel_tempering_fails(tmp_path):
    torch.set_num_threads(1)
    cache.global_context_cache.empty()
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    system = example.make_system()
    exact = system.exact_populations(example.TEMPERATURES[0]).left

    plain_storage, augmented_storage = str(tmp_path / "plain.nc"), str(tmp_path / "augmented.nc")
    example.run(example.plain_sampler(N_ITERATIONS), system, plain_storage)
    example.run(example.augmented_sampler(N_ITERATIONS, FREEZE_AFTER, seed=1), system, augmented_storage)
    plain, plain_error = example.left_estimate(example.lowest_state_wells(plain_storage), FREEZE_AFTER + BURN_IN)
    augmented, augmented_error = example.left_estimate(example.lowest_state_wells(augmented_storage), FREEZE_AFTER + BURN_IN)
    print(f"exact {exact:.3f}  plain {plain:.3f}+-{plain_error:.3f}  augmented {augmented:.3f}+-{augmented_error:.3f}")

    # batch means over 8 batches is itself a noisy error estimate (measured once 0.016, half the binomial error
    # of 200 independent samples, 0.032, and the check failed at 0.790 against 0.709); this chain's samples are
    # positively correlated, so its error is floored at that of independent samples
    n_samples = N_ITERATIONS - (FREEZE_AFTER + BURN_IN)
    assert abs(augmented - exact) < 4 * max(augmented_error, np.sqrt(exact * (1 - exact) / n_samples))
    assert augmented_error < 0.08  # precise enough to mean something
    assert abs(plain - exact) > 4 * max(plain_error, 0.02)
