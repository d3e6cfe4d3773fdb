"""The drop-in samplers: settings in storage, phases, validation, resume after SIGKILL, MPI."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import openmm
import pytest
from openmm import unit
from openmmtools import cache, multistate, states

from openmm_ddpm.app.plots import plot_proposal_statistics
from openmm_ddpm.model import cosine_learning_rate
from openmm_ddpm.moves import TemperatureMixture
from openmm_ddpm.multistate import (
    DDPMParallelTemperingSampler,
    OnlineLearner,
    export_proposal_model,
    load_exported_model,
    load_run,
    read_ddpm_statistics,
)
from openmm_ddpm.multistate.checkpoints import checkpoint_path, list_checkpoints
from openmm_ddpm.settings import Settings, TrainingSettings
from openmm_ddpm.testsystems import DoubleWell2D

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "double_well_remd.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
from double_well_remd import SMALL  # noqa: E402


@pytest.fixture(autouse=True)
def reference_platform():
    cache.global_context_cache.empty()
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")


def small_run(storage, n_iterations, freeze_after):
    system = DoubleWell2D()
    sampler = DDPMParallelTemperingSampler(number_of_iterations=n_iterations, freeze_after=freeze_after,
                                           online_analysis_interval=None, **SMALL)
    reporter = multistate.MultiStateReporter(storage, checkpoint_interval=5)
    sampler.create(states.ThermodynamicState(system.system, 300 * unit.kelvin),
                   states.SamplerState(system.minimum_positions(1)), reporter,
                   temperatures=[300.0, 600.0, 1200.0] * unit.kelvin)
    sampler.run()
    return sampler


def test_phases_statistics_and_settings_in_storage(tmp_path):
    storage = str(tmp_path / "run.nc")
    sampler = small_run(storage, n_iterations=14, freeze_after=8)
    ema = {k: v.clone() for k, v in sampler.learner.trainer.ema_network.state_dict().items()}
    statistics = read_ddpm_statistics(storage)
    phase = statistics["ddpm_phase"][1:15]
    assert phase.tolist() == [0] * 8 + [1] * 6
    steps = statistics["ddpm_training_steps"][1:15]
    assert np.all(steps[8:] == steps[7]) and steps[7] > 0  # no training after freeze_after
    assert np.all(np.isnan(statistics["ddpm_training_loss"][9:15]))
    candidates = statistics["ddpm_n_candidates"][1:15]
    ready = steps >= SMALL["proposals"]["min_training_steps"]
    assert np.all(candidates[~ready] == 0) and np.all(candidates[ready] == SMALL["proposals"]["n_candidates"])
    assert statistics["ddpm_buffer_frames"][14] == 14 * 3 * 10  # 3 replicas x 500 steps / stride 50
    assert list_checkpoints(sampler.run_directory) == [5, 10]
    assert sampler.learner.target_temperatures_kelvin == (300.0,)

    # the frozen model comes back from storage for analysis, scoring exactly as the run's own copy
    run = load_run(storage)
    model, ddpm, iteration = run.model, run.learner, run.iteration
    assert iteration == 10 and ddpm.frozen
    positions, _ = sampler.learner.buffer.arrays()
    frames = positions[-20:].astype(np.float64)
    np.testing.assert_allclose(model.log_prob(frames, 300 * unit.kelvin),
                               sampler.learner.proposal_model.log_prob(frames, 300 * unit.kelvin), rtol=0, atol=1e-10)
    # exported alone (no buffer, no optimizer), it still scores the same, and a tampered file is refused
    digest = export_proposal_model(ddpm, str(tmp_path / "model.pt"), iteration)
    exported = load_exported_model(str(tmp_path / "model.pt"), DoubleWell2D().system, expected_sha256=digest)
    np.testing.assert_allclose(exported.log_prob(frames, 400 * unit.kelvin),
                               model.log_prob(frames, 400 * unit.kelvin), rtol=0, atol=1e-10)
    assert os.path.getsize(tmp_path / "model.pt") < os.path.getsize(checkpoint_path(sampler.run_directory, 10)) / 2
    with pytest.raises(ValueError, match="hash"):
        load_exported_model(str(tmp_path / "model.pt"), DoubleWell2D().system, expected_sha256="0" * 64)
    plot_proposal_statistics(statistics, str(tmp_path / "statistics.png"), window=3)
    assert os.path.getsize(tmp_path / "statistics.png") > 10_000
    del sampler

    resumed = DDPMParallelTemperingSampler.from_storage(storage)
    assert resumed._proposals.n_candidates == SMALL["proposals"]["n_candidates"]
    assert resumed._model.width == SMALL["model"]["width"] and resumed._freeze_after == 8
    assert resumed.iteration == 10 and resumed.learner.restored_from_iteration == 10
    assert resumed.learner.frozen
    for key, value in resumed.learner.trainer.ema_network.state_dict().items():
        assert np.array_equal(value.numpy(), ema[key].numpy())  # frozen weights survive the resume


def test_mapped_exchanges_run_each_proposal_round_and_resume_from_checkpoints(tmp_path):
    """exchange_pairs: one MappedExchange per pair and proposal round, counted in storage, its state in the checkpoint.

    Also stream_when_frozen=False: frozen, each replica's MD runs in one call and streams its last frame only.
    """
    storage = str(tmp_path / "run.nc")
    system = DoubleWell2D()
    settings = {**SMALL, "proposals": {**SMALL["proposals"], "exchange_pairs": [(0, 2)]},
                "dynamics": {**SMALL["dynamics"], "stream_when_frozen": False}}
    sampler = DDPMParallelTemperingSampler(number_of_iterations=12, freeze_after=6, online_analysis_interval=None, **settings)
    sampler.create(states.ThermodynamicState(system.system, 300 * unit.kelvin), states.SamplerState(system.minimum_positions(1)),
                   multistate.MultiStateReporter(storage, checkpoint_interval=5), temperatures=[300.0, 600.0, 1200.0] * unit.kelvin)
    sampler.run()
    statistics = read_ddpm_statistics(storage)
    proposed = statistics["ddpm_n_candidates"][1:13] > 0
    exchanges = statistics["ddpm_n_exchanges"][1:13]
    assert proposed.sum() >= 6 and np.all(exchanges[proposed] == 1) and np.all(exchanges[~proposed] == 0)
    exchange = sampler.learner.exchanges[(0, 2)]
    assert exchange.n_attempts == proposed.sum() == np.nansum(exchanges)
    assert np.nansum(statistics["ddpm_n_exchanges_accepted"][1:13]) == exchange.n_accepted
    assert statistics["ddpm_buffer_frames"][12] == 6 * 3 * 10 + 6 * 3  # 3 replicas x 500 steps / stride 50, then 1
    outcome = sampler.last_exchange_outcomes[(0, 2)]
    assert outcome.states == (0, 2) and outcome.offered.shape == (2, 1, 3)
    # the checkpoint of iteration 10 carries the exchange's counters (and its random stream)
    run = load_run(storage)
    restored = run.learner.exchanges[(0, 2)]
    assert run.iteration == 10 and restored.n_attempts == proposed[:10].sum()


def test_no_proposal_from_an_untrained_model(tmp_path):
    storage = str(tmp_path / "run.nc")
    system = DoubleWell2D()
    sampler = DDPMParallelTemperingSampler(number_of_iterations=3, online_analysis_interval=None,
                                           proposals=dict(min_training_steps=10**6), training=dict(min_buffer_frames=10))
    sampler.create(states.ThermodynamicState(system.system, 300 * unit.kelvin), states.SamplerState(system.positions),
                   multistate.MultiStateReporter(storage), temperatures=[300.0, 400.0] * unit.kelvin)
    sampler.run()
    assert np.nansum(read_ddpm_statistics(storage)["ddpm_n_candidates"]) == 0


def test_a_model_frozen_before_min_training_steps_proposes_in_production(tmp_path):
    """Waiting for steps that will never come would silently turn the production phase into plain PT."""
    storage = str(tmp_path / "run.nc")
    system = DoubleWell2D()
    sampler = DDPMParallelTemperingSampler(number_of_iterations=5, online_analysis_interval=None, freeze_after=3,
                                           proposals=dict(min_training_steps=10**6, n_candidates=2),
                                           training=dict(min_buffer_frames=10, train_steps=5))
    sampler.create(states.ThermodynamicState(system.system, 300 * unit.kelvin), states.SamplerState(system.positions),
                   multistate.MultiStateReporter(storage), temperatures=[300.0, 400.0] * unit.kelvin)
    sampler.run()
    candidates = read_ddpm_statistics(storage)["ddpm_n_candidates"][1:6]
    assert candidates.tolist() == [0, 0, 0, 2, 2]


def test_bad_settings_are_refused(tmp_path):
    system = DoubleWell2D()
    with pytest.raises(ValueError, match="target state 5"):
        DDPMParallelTemperingSampler(proposals=dict(target_states=[5])).create(
            states.ThermodynamicState(system.system, 300 * unit.kelvin), states.SamplerState(system.positions),
            multistate.MultiStateReporter(str(tmp_path / "c.nc")), temperatures=[300.0, 400.0] * unit.kelvin)
    with pytest.raises(ValueError, match="unknown"):
        DDPMParallelTemperingSampler(model=dict(wdith=3))
    with pytest.raises(ValueError, match="freeze_after"):
        DDPMParallelTemperingSampler(freeze_after=-1)
    with pytest.raises(ValueError, match="target_fraction"):
        DDPMParallelTemperingSampler(training=dict(target_fraction=0.0))
    with pytest.raises(ValueError, match="final_learning_rate"):
        DDPMParallelTemperingSampler(training=dict(learning_rate=1e-3, final_learning_rate=2e-3))
    with pytest.raises(ValueError, match="temperature_factors"):
        DDPMParallelTemperingSampler(proposals=dict(temperature_factors=[1.0, -2.0]))
    with pytest.raises(ValueError, match="temperature_factor_weights"):
        DDPMParallelTemperingSampler(proposals=dict(temperature_factors=[1.0, 2.0], temperature_factor_weights=[1.0]))


def test_temperature_mixture_proposals_from_settings(tmp_path):
    """proposals=dict(temperature_factors=...) makes every move draw from the mixture, kept through storage."""
    storage = str(tmp_path / "run.nc")
    system = DoubleWell2D()
    sampler = DDPMParallelTemperingSampler(number_of_iterations=5, online_analysis_interval=None, freeze_after=3,
                                           proposals=dict(min_training_steps=10**6, n_candidates=2,
                                                          temperature_factors=[1.0, 2.0], temperature_factor_weights=[3, 1]),
                                           training=dict(min_buffer_frames=10, train_steps=5))
    sampler.create(states.ThermodynamicState(system.system, 300 * unit.kelvin), states.SamplerState(system.positions),
                   multistate.MultiStateReporter(storage, checkpoint_interval=1), temperatures=[300.0, 400.0] * unit.kelvin)
    sampler.run()
    model = sampler.learner.proposals[0].model
    assert isinstance(model, TemperatureMixture) and model.model is sampler.learner.proposal_model
    assert model.temperature_factors.tolist() == [1.0, 2.0] and np.allclose(np.exp(model.log_weights), [0.75, 0.25])
    assert read_ddpm_statistics(storage)["ddpm_n_candidates"][1:6].tolist() == [0, 0, 0, 2, 2]
    run = load_run(storage)
    _, ddpm, _ = run.model, run.learner, run.iteration
    assert ddpm.settings.proposals.temperature_factors == (1.0, 2.0)


def test_learning_rate_decays_over_the_adaptive_phase_to_its_final_value(tmp_path):
    """With final_learning_rate, round i of an adaptive phase of F iterations runs at the
    cosine value at i / F: the initial rate early on, the final one at the freeze."""
    system = DoubleWell2D()
    settings = dict(SMALL, training=dict(SMALL["training"], learning_rate=1e-3, final_learning_rate=1e-5))
    sampler = DDPMParallelTemperingSampler(number_of_iterations=8, freeze_after=6, online_analysis_interval=None,
                                           **settings)
    sampler.create(states.ThermodynamicState(system.system, 300 * unit.kelvin),
                   states.SamplerState(system.minimum_positions(1)),
                   multistate.MultiStateReporter(str(tmp_path / "run.nc"), checkpoint_interval=5),
                   temperatures=[300.0, 600.0, 1200.0] * unit.kelvin)
    rates = {}
    while sampler.iteration < 8:
        sampler.run(1)
        if sampler.learner.trainer is not None:
            rates[sampler.iteration] = sampler.learner.trainer.optimizer.param_groups[0]["lr"]
    expected = {i: 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * i / 6)) for i in range(2, 7)}
    for iteration, rate in expected.items():
        assert rates[iteration] == pytest.approx(rate, rel=1e-12)
    assert rates[6] == pytest.approx(1e-5) and rates[8] == rates[6]  # frozen: no more rounds
    assert cosine_learning_rate(-1.0, 1e-3, 1e-5) == 1e-3 and cosine_learning_rate(2.0, 1e-3, 1e-5) == 1e-5


@pytest.mark.parametrize("target_fraction, expected", [(None, 0.25), (0.5, 0.5), (1.0, 1.0)])
def test_training_frames_favour_the_target_temperature_as_asked(target_fraction, expected):
    """A buffer streamed evenly from 4 temperatures: each round's frames come from 300 K
    in the share ``target_fraction`` asks for (as streamed without it)."""
    settings = Settings(training=TrainingSettings(train_steps=40, batch_size=100, target_fraction=target_fraction))
    system = DoubleWell2D()
    ddpm = OnlineLearner(settings, system.system, system.positions.value_in_unit(unit.nanometer), [300.0])
    temperatures = np.tile([300.0, 400.0, 550.0, 700.0], 3000).astype(np.float32)
    ddpm.buffer.add(np.zeros((len(temperatures), system.system.getNumParticles(), 3)), temperatures)
    _, kelvins = ddpm.buffer.arrays()
    subset = ddpm._training_subset(kelvins)
    assert len(subset) == 4000
    assert np.mean(kelvins[subset] == 300.0) == pytest.approx(expected, abs=0.03)


def _start(args):
    return subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _result(process, timeout=300):
    output, _ = process.communicate(timeout=timeout)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert process.returncode == 0 and lines, output[-3000:]
    return json.loads(lines[-1])


def _kill_when_paused(process):
    for line in process.stdout:
        if line.startswith("PAUSED"):
            break
    else:
        raise AssertionError("the run ended before the kill point")
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_resume_after_sigkill_in_the_middle_of_a_run(tmp_path):
    """Killed between iteration 22's start and its dynamics (not inside an HDF5 write of openmmtools'
    storage: a kill there can leave the storage unreadable, seen once in CI as 'NetCDF: HDF error' on
    reading it back, which no checkpoint of ours repairs)."""
    storage = str(tmp_path / "run.nc")
    run_directory = str(tmp_path / "run_ddpm")
    process = _start([storage, "40", "--pause-in-iteration", "22"])
    _kill_when_paused(process)
    last_checkpoint = max(list_checkpoints(run_directory))
    assert last_checkpoint >= 20
    result = _result(_start([storage, "40", "--resume"]))
    assert result["final_iteration"] == 40
    assert result["start_iteration"] == result["restored_from_iteration"] >= last_checkpoint - 5
    recorded = read_ddpm_statistics(storage)["ddpm_training_steps"]
    assert result["training_steps_at_start"] == recorded[result["restored_from_iteration"]]
    assert result["training_steps"] > result["training_steps_at_start"]


def test_resume_after_sigkill_in_the_middle_of_a_checkpoint_write(tmp_path):
    storage = str(tmp_path / "run.nc")
    run_directory = str(tmp_path / "run_ddpm")
    process = _start([storage, "30", "--pause-at-checkpoint", "15"])
    _kill_when_paused(process)
    assert any(name.startswith(".tmp_") for name in os.listdir(run_directory))  # a half-done write
    assert max(list_checkpoints(run_directory)) == 10
    result = _result(_start([storage, "30", "--resume"]))
    assert result["restored_from_iteration"] == 10 and result["final_iteration"] == 30
    assert not any(name.startswith(".tmp_") for name in os.listdir(run_directory))


def _mpiexec():
    candidate = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return candidate if os.path.exists(candidate) else shutil.which("mpiexec")


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec: pip install mpi4py mpich")
def test_two_mpi_ranks_share_the_proposed_positions(tmp_path):
    storage, report = str(tmp_path / "run.nc"), str(tmp_path / "report")
    command = [_mpiexec(), "-n", "2", sys.executable, SCRIPT, storage, "20", "--report", report]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    result = json.loads([line for line in completed.stdout.splitlines() if line.startswith("{")][-1])
    assert result["final_iteration"] == 20 and result["candidates"] > 0
    ranks = [np.load(f"{report}.rank{r}.npz") for r in (0, 1)]
    assert np.array_equal(ranks[0]["replica_states"], ranks[1]["replica_states"])
    # every accepted proposal reached both ranks, with identical positions
    accepted = int(np.nansum(read_ddpm_statistics(storage)["ddpm_n_accepted"]))
    assert accepted > 0 and len(ranks[0]["iterations"]) == len(ranks[1]["iterations"]) == accepted
    for key in ("iterations", "replicas", "positions"):
        assert np.array_equal(ranks[0][key], ranks[1][key])


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec: pip install mpi4py mpich")
def test_a_two_rank_mpi_run_killed_midway_resumes_on_two_ranks(tmp_path):
    """openmmtools#624: SIGKILL to every process of a 2-rank run in iteration 17; the same 2-rank command with
    --resume restores the checkpoint of iteration 15 (model and storage) and completes."""
    storage = str(tmp_path / "run.nc")
    command = [_mpiexec(), "-n", "2", sys.executable, SCRIPT, storage, "30"]
    process = subprocess.Popen(command + ["--pause-in-iteration", "17"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in process.stdout:
        if line.startswith("PAUSED"):
            break
    else:
        raise AssertionError("the run ended before the kill point")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    completed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    result = json.loads([line for line in completed.stdout.splitlines() if line.startswith("{")][-1])
    assert result["final_iteration"] == 30 and result["start_iteration"] == result["restored_from_iteration"] == 15
