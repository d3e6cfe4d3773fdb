"""One sampler, one seed, one wall-clock budget: the per-iteration trace that ``compare_remd.py`` analyses.

A trace holds, per iteration: the wall time since the run started (model
setup, training, proposals, MD, exchanges and storage all count), the basin
indicator of the configuration in every state, the reduced potential of
every state's configuration in every state (for MBAR), and for the augmented
sampler the waste-recycled basin value of the move at 300 K, whether it was
accepted and its ESS / (K + 1) (NaN where no move was made), with the
seconds spent training and proposing; its frozen model is exported beside
the trace (``*_model.pt``).

The systems (``SYSTEMS``): the double well of ``openmm_ddpm.app.double_well``
(exact answer), alanine dipeptide in vacuum with 6 replicas (300-1000 K,
geometric) or 2 (300 and 1000 K), and in implicit solvent (OBC1) with 6;
``alanine_vacuum_6_lean`` is the 6-replica vacuum setting with another
budget shape for the augmented sampler (plain MD until the buffer holds
1,000 iterations of frames, 25 training steps per iteration instead of
100, a proposal every 4th iteration); ``*_mapped`` add a mapped replica
exchange (``openmm_ddpm.moves.MappedExchange``) between 300 and 1000 K at
every proposal round; ``alanine_vacuum_6_hbonds`` is the lean setting with
``constraints=HBonds`` and 2 fs steps (what most users' scripts run).
Both samplers run the same Langevin dynamics per iteration, velocities kept
between iterations and rescaled at a swap (since session 17; earlier
results kept them unscaled on both sides, which heats the 300 K ensemble:
docs/exactness.md, "Velocities at a swap"), on the same platform (Reference for 22 atoms and for the double well, CPU with one
thread in implicit solvent) from the same starting configurations.
"""
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import openmm
import torch
from openmm import app, unit
from openmmtools import cache, mcmc, multistate, states, testsystems

from openmm_ddpm.app import double_well
from openmm_ddpm.coordinates.geometry import dihedral
from openmm_ddpm.multistate import DDPMParallelTemperingSampler, export_proposal_model
from openmm_ddpm.multistate.velocities import RescaledSwapsMixin

PHI_ATOMS = [4, 6, 8, 14]  # C(ACE) N CA C of alanine dipeptide


@dataclass(frozen=True)
class ComparedSystem:
    """What both samplers share for one comparison.

    Attributes
    ----------
    name : str
    make : callable
        () -> (openmm.System, list of starting positions (one per replica), in_basin)
        where ``in_basin(positions (n, N, 3) nm) -> bool (n,)``.
    temperatures_kelvin : tuple of float
    platform : str
        OpenMM platform of the MD (one thread).
    timestep_fs, md_steps : float, int
        Langevin dynamics per iteration (collision rate 1/ps), for both samplers.
    stream_stride : int
        MD steps between frames the augmented sampler streams into its buffer. Each frame costs one
        openmmtools move call (~0.3 ms on the Reference platform): 50 frames per 500 steps cost the
        alanine replicas ~15 ms per iteration against ~20 ms of MD, 10 frames ~3 ms.
    augmented : dict
        Keyword arguments of ``DDPMParallelTemperingSampler`` besides dynamics and seed.
    train_fraction : float
        Share of the wall-clock budget the augmented sampler learns for; it freezes its model after it.
    basin : str
        What ``in_basin`` selects; dF = -ln(p / (1 - p)) in kT of that basin at 300 K.
    reference : str
        Name of the reference result ``compare_reference_<reference>.json`` (alanine dipeptide: the
        molecule, solvent and constraints, which set the ensemble).
    """

    name: str
    make: callable
    temperatures_kelvin: tuple
    platform: str
    timestep_fs: float
    md_steps: int
    stream_stride: int
    augmented: dict = field(default_factory=dict)
    train_fraction: float = 0.5
    basin: str = ""
    reference: str = ""


def _double_well():
    system = double_well.make_system()
    positions = [system.minimum_positions(w) for w in double_well.STARTING_WELLS]
    return system.system, positions, lambda x: np.asarray(x)[:, 0, 0] >= 0.0  # right well


def _alanine(solvent, n_replicas, constraints=None):
    def make():
        factory = testsystems.AlanineDipeptideVacuum if solvent == "vacuum" else testsystems.AlanineDipeptideImplicit
        molecule = factory(constraints=constraints)
        return molecule.system, [molecule.positions] * n_replicas, phi_positive
    return make


def phi_positive(positions_nm):
    """phi > 0 of alanine dipeptide configurations (n, N, 3) nm."""
    x = torch.as_tensor(np.asarray(positions_nm)[:, PHI_ATOMS])
    return dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3]).numpy() > 0.0


def _alanine_augmented(width=128, depth=2, n_steps=10, propose_interval=1, exchange_pairs=(), train_steps=100,
                       min_buffer_frames=2000, n_candidates=8):
    """Internal coordinates; the network and flow steps that pay on one CPU core (exact densities ~7x cheaper than 256 x 3 x 20)."""
    return dict(
        representation=dict(kind="internal"),
        model=dict(width=width, depth=depth, n_steps=n_steps, sigma_min=0.02),
        training=dict(train_steps=train_steps, min_buffer_frames=min_buffer_frames, buffer_capacity=400_000),
        proposals=dict(target_states=[0], n_candidates=n_candidates, min_training_steps=10_000,
                       propose_interval=propose_interval, exchange_pairs=exchange_pairs),
    )


SYSTEMS = {
    "double_well": ComparedSystem(
        "double_well", _double_well, tuple(double_well.TEMPERATURES.value_in_unit(unit.kelvin)), "Reference",
        2.0, 500, 25, dict(model=dict(width=64, depth=2, n_steps=20), training=dict(train_steps=40, min_buffer_frames=200),
                       proposals=dict(target_states=[0, 1], n_candidates=8, min_training_steps=200)),
        train_fraction=0.25, basin="right well"),
    "alanine_vacuum_6": ComparedSystem(
        "alanine_vacuum_6", _alanine("vacuum", 6), tuple(np.geomspace(300.0, 1000.0, 6)), "Reference", 1.0, 500, 50,
        _alanine_augmented(), basin="phi > 0"),
    # the budget shape: the ladder equilibrates before the model learns (training waits for 1,000 iterations of
    # frames, two per replica and iteration) and while it learns (25 training steps per iteration instead of 100: with
    # 100 the 300 K replica streamed no alpha_L frame before the freeze); a proposal every 4th iteration
    "alanine_vacuum_6_lean": ComparedSystem(
        "alanine_vacuum_6_lean", _alanine("vacuum", 6), tuple(np.geomspace(300.0, 1000.0, 6)), "Reference", 1.0, 500, 250,
        _alanine_augmented(propose_interval=4, train_steps=25, min_buffer_frames=12_000), basin="phi > 0"),
    # the GPU budget shape (issue 17): the lean shape with 4,096 candidates per move, which a GPU scores in about the
    # time it scores 8 (1.0 s per move on an H200, ESS ~200): many weighted points for the recycled estimator
    "alanine_vacuum_6_gpu": ComparedSystem(
        "alanine_vacuum_6_gpu", _alanine("vacuum", 6), tuple(np.geomspace(300.0, 1000.0, 6)), "Reference", 1.0, 500, 250,
        _alanine_augmented(propose_interval=2, train_steps=25, min_buffer_frames=12_000, n_candidates=4096),
        basin="phi > 0"),
    "alanine_vacuum_2": ComparedSystem(
        "alanine_vacuum_2", _alanine("vacuum", 2), (300.0, 1000.0), "Reference", 1.0, 500, 50, _alanine_augmented(),
        basin="phi > 0"),
    # the mapped replica exchange between the lowest and the highest temperature, every proposal round
    "alanine_vacuum_2_mapped": ComparedSystem(
        "alanine_vacuum_2_mapped", _alanine("vacuum", 2), (300.0, 1000.0), "Reference", 1.0, 500, 50,
        _alanine_augmented(exchange_pairs=((0, 1),)), basin="phi > 0"),
    "alanine_vacuum_6_mapped": ComparedSystem(
        "alanine_vacuum_6_mapped", _alanine("vacuum", 6), tuple(np.geomspace(300.0, 1000.0, 6)), "Reference", 1.0, 500, 50,
        _alanine_augmented(exchange_pairs=((0, 5),)), basin="phi > 0"),
    # constraints=HBonds, as in most users' scripts: 2 fs steps for both samplers; the lean budget shape
    "alanine_vacuum_6_hbonds": ComparedSystem(
        "alanine_vacuum_6_hbonds", _alanine("vacuum", 6, app.HBonds), tuple(np.geomspace(300.0, 1000.0, 6)), "Reference",
        2.0, 500, 250, _alanine_augmented(propose_interval=4, train_steps=25, min_buffer_frames=12_000), basin="phi > 0",
        reference="alanine_vacuum_hbonds"),
    "alanine_implicit_6": ComparedSystem(
        "alanine_implicit_6", _alanine("implicit", 6), tuple(np.geomspace(300.0, 1000.0, 6)), "CPU", 1.0, 500, 50,
        _alanine_augmented(), basin="phi > 0"),
}


class RescalingParallelTemperingSampler(RescaledSwapsMixin, multistate.ParallelTemperingSampler):
    """openmmtools' parallel tempering with swapped replicas' velocities rescaled to their new temperature.

    The dynamics keep velocities between iterations, as the augmented
    sampler's do, and both rescale at a swap (``openmm_ddpm.multistate.velocities``),
    so plain and augmented sample the same, exact ensembles. (Results made
    before this class existed kept the velocities unscaled on both sides.)
    """


def make_sampler(compared, kind, seed):
    """Plain parallel tempering (``RescalingParallelTemperingSampler``) or ours ('augmented'), the same dynamics."""
    timestep, collision = compared.timestep_fs * unit.femtosecond, 1.0 / unit.picosecond
    if kind == "plain":
        move = mcmc.LangevinDynamicsMove(timestep=timestep, collision_rate=collision, n_steps=compared.md_steps,
                                         reassign_velocities=False)
        return RescalingParallelTemperingSampler(mcmc_moves=move, number_of_iterations=10**9,
                                                 online_analysis_interval=None)
    return DDPMParallelTemperingSampler(
        number_of_iterations=10**9, online_analysis_interval=None, seed=seed,
        dynamics=dict(timestep=timestep, collision_rate=collision, n_steps=compared.md_steps,
                      stream_stride=compared.stream_stride, stream_when_frozen=False), **compared.augmented)


def start_sampler(compared, kind, seed, directory, every_atom=False):
    """A created sampler (``make_sampler``) with its storage ``directory``/run.nc, one thread; (sampler, reporter, in_basin).

    Plain PT gets its seed through numpy's global generator (openmmtools'
    mixing) and OpenMM's Langevin seed; the augmented sampler through its
    ``seed`` (every stream of the run). The storage holds atom 0 per
    iteration, or ``every_atom``.
    """
    torch.set_num_threads(1)
    np.random.seed(seed)
    properties = {"Threads": "1"} if compared.platform == "CPU" else None
    cache.global_context_cache.set_platform(openmm.Platform.getPlatformByName(compared.platform), properties)
    system, positions, in_basin = compared.make()
    stored = list(range(system.getNumParticles())) if every_atom else [0]
    reporter = multistate.MultiStateReporter(os.path.join(directory, "run.nc"), checkpoint_interval=100,
                                             analysis_particle_indices=stored)
    sampler = make_sampler(compared, kind, seed)
    kelvins = compared.temperatures_kelvin
    sampler.create(states.ThermodynamicState(system, kelvins[0] * unit.kelvin),
                   [states.SamplerState(p) for p in positions], reporter,
                   temperatures=[t * unit.kelvin for t in kelvins], n_temperatures=len(kelvins))
    return sampler, reporter, in_basin


def run_trace(compared, kind, seed, seconds, path, directory=None):
    """Run one sampler (``start_sampler``) for ``seconds`` of wall time (s) and save its trace to ``path`` (.npz)."""
    directory = directory or tempfile.mkdtemp(prefix=f"compare_{compared.name}_{kind}_")
    sampler, reporter, in_basin = start_sampler(compared, kind, seed, directory)
    kelvins = compared.temperatures_kelvin
    rows = _run_for(sampler, kind, in_basin, seconds, compared.train_fraction)
    if kind == "augmented" and sampler.learner.proposal_model is not None:  # the frozen model, for importance sampling
        export_proposal_model(sampler.learner, path.replace(".npz", "_model.pt"), sampler.iteration)
    reporter.close()
    from provenance import machine_description

    np.savez_compressed(path, **rows, temperatures_kelvin=np.asarray(kelvins), seconds_budget=seconds,
                        machine=machine_description())
    return path


def _run_for(sampler, kind, in_basin, seconds, train_fraction):
    """Iterate until the budget is spent; collect the per-iteration trace."""
    rows = {key: [] for key in ("wall_seconds", "in_basin", "reduced_potentials", "recycled", "accepted", "ess_fraction",
                                "training_seconds", "proposal_seconds", "production", "exchange_acceptance")}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        elapsed = time.perf_counter() - start
        if kind == "augmented" and sampler._freeze_after is None and elapsed >= train_fraction * seconds:
            sampler._freeze_after = sampler.iteration  # freeze by wall time: the budget, not an iteration count
        sampler.run(1)
        rows["wall_seconds"].append(time.perf_counter() - start)
        replica_of_state = np.argsort(sampler._replica_thermodynamic_states)
        configurations = np.stack([sampler._sampler_states[r].positions.value_in_unit(unit.nanometer)
                                   for r in replica_of_state])
        rows["in_basin"].append(in_basin(configurations))
        rows["reduced_potentials"].append(sampler._energy_thermodynamic_states[replica_of_state])
        outcome = getattr(sampler, "last_proposal_outcomes", {}).get(0)
        rows["recycled"].append(np.nan if outcome is None else outcome.recycled(in_basin(outcome.configurations)))
        rows["accepted"].append(np.nan if outcome is None else float(outcome.chosen > 0))
        rows["ess_fraction"].append(np.nan if outcome is None else outcome.ess_fraction)
        statistics = getattr(sampler, "_ddpm_iteration_statistics", {})
        rows["training_seconds"].append(statistics.get("ddpm_training_seconds", 0.0))
        rows["proposal_seconds"].append(statistics.get("ddpm_proposal_seconds", 0.0))
        rows["production"].append(statistics.get("ddpm_phase", 0) == 1)
        exchanges = list(getattr(sampler, "last_exchange_outcomes", {}).values())  # min(1, ratio), NaN: none this iteration
        rows["exchange_acceptance"].append(exchanges[0].acceptance_probability if exchanges else np.nan)
    return {key: np.asarray(value) for key, value in rows.items()}
