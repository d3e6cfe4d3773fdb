"""Inputs that try to break a run: each ends in a one-line error naming the problem and the fix, or in a
candidate that is rejected and counted (docs/reliability.md keeps the table of every one tried)."""
import errno
import os
import shutil

import numpy as np
import openmm
import pytest
import torch
from analytic import GaussianMixtureModel
from openmm import unit
from openmmtools import cache, states, testsystems

from openmm_ddpm import load_exported_model
from openmm_ddpm.multistate.checkpoints import file_sha256

MODEL = os.path.join(os.path.dirname(__file__), "data", "alanine_dipeptide_vacuum_model.pt")


class HostileModel(GaussianMixtureModel):
    """Candidates at 1e8 x the positions, shifted by 1e300 nm, infinite, NaN, or with a NaN log-density."""

    def sample(self, n, temperature, generator=None, reference_positions=None):
        positions, log_q = super().sample(n, temperature, generator)
        positions[0::5] *= 1e8
        positions[1::5, 0] = 1e300
        positions[2::5] = np.inf
        positions[3::5] = np.nan
        log_q[4::5] = np.nan
        return positions, log_q


def test_wild_candidates_on_a_molecule_are_rejected_and_counted():
    """Alanine dipeptide, OpenMM Reference: 20 moves of 10 candidates each, every one unphysical or without a
    density. None is accepted, none raises, and the candidates without a finite weight are counted."""
    from openmm_ddpm.moves import GenerativeProposal

    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    start = molecule.positions.value_in_unit(unit.nanometer)
    proposal = GenerativeProposal(HostileModel([start], [0.01], [1.0]), n_candidates=10, random_state=0)
    thermodynamic_state = states.ThermodynamicState(molecule.system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(molecule.positions)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    invalid = 0
    for _ in range(20):
        proposal.apply(thermodynamic_state, sampler_state, context_cache)
        invalid += int(np.sum(~np.isfinite(proposal.last_outcome.log_weights[1:])))
    assert proposal.statistics.n_accepted == 0
    np.testing.assert_array_equal(sampler_state.positions.value_in_unit(unit.nanometer), start)
    assert invalid >= 20 * 6  # inf, NaN, NaN log q and the 1e300 shift at least; 1e8 x gets a weight of exp(-1e20)
    assert proposal.statistics.n_invalid_candidates == invalid


def _exported_copy(tmp_path, name="model.pt"):
    path = str(tmp_path / name)
    shutil.copy(MODEL, path)
    with open(path + ".sha256", "w") as stream:
        stream.write(file_sha256(path) + "\n")
    return path


def _truncated(path):
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) // 2)


def _corrupted(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    open(path, "wb").write(bytes(data))


def _rewritten(change):
    def rewrite(path):
        state = torch.load(path, weights_only=True)
        change(state)
        torch.save(state, path)
        os.unlink(path + ".sha256")  # a file written by hand carries no hash
    return rewrite


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PAYLOAD_RAN",))


def _pickled(path):
    torch.save({"payload": Payload()}, path)
    os.unlink(path + ".sha256")


def _empty(path):
    open(path, "wb").close()
    os.unlink(path + ".sha256")


@pytest.mark.parametrize("spoil, system, message", [
    (_truncated, None, "SHA-256"),  # the hash file catches it first
    (_corrupted, None, "SHA-256"),
    (lambda path: open(path + ".sha256", "w").write("0" * 64), None, "SHA-256"),  # tampered
    (lambda path: os.unlink(path + ".sha256") or _truncated(path), None, "truncated or corrupted"),
    (_empty, None, "truncated or corrupted"),
    (_pickled, None, "refused without being executed"),
    (_rewritten(lambda state: state.update(package_version="9.0.0")), None, "upgrade openmm_ddpm"),
    (_rewritten(lambda state: state.pop("ema_network")), None, "lacks ema_network"),
    (None, testsystems.LennardJonesCluster(nx=2, ny=2, nz=2).system, "8: give the System"),
    (None, testsystems.AlanineDipeptideVacuum().system, "same constraints"),  # HBonds: 12 fewer coordinates
])
def test_a_spoiled_or_foreign_model_file_is_refused_in_one_line(tmp_path, monkeypatch, spoil, system, message):
    monkeypatch.chdir(tmp_path)
    path = _exported_copy(tmp_path)
    if spoil is not None:
        spoil(path)
    with pytest.raises(ValueError) as error:
        load_exported_model(path, system or testsystems.AlanineDipeptideVacuum(constraints=None).system)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "PAYLOAD_RAN")


def test_the_intact_model_file_loads(tmp_path):
    """The control of the table above: the same file, unspoiled, with its hash file."""
    model = load_exported_model(_exported_copy(tmp_path), testsystems.AlanineDipeptideVacuum(constraints=None).system)
    assert model is not None


def test_the_command_line_reports_a_spoiled_model_in_one_line(tmp_path, capsys):
    from openmm_ddpm.app import cli

    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "config.yaml").write_text("system: {builtin: alanine_dipeptide_vacuum}\n")
    _corrupted(_exported_copy(directory))
    assert cli.main(["sample", str(directory), "--temperature", "300K", "-n", "4",
                     "--out", str(tmp_path / "s.pdb")]) == 2
    printed = capsys.readouterr().err
    assert "SHA-256" in printed and printed.count("\n") == 1 and "Traceback" not in printed


def test_a_plain_openmmtools_storage_is_refused_by_from_storage_in_one_line(tmp_path):
    from test_cli_run import plain_parallel_tempering_storage

    from openmm_ddpm import DDPMParallelTemperingSampler

    cache.global_context_cache.empty()
    plain_parallel_tempering_storage(tmp_path / "plain.nc", 2)
    with pytest.raises(ValueError, match="plain openmmtools sampler") as error:
        DDPMParallelTemperingSampler.from_storage(str(tmp_path / "plain.nc"))
    assert "openmm-ddpm train" in str(error.value) and "\n" not in str(error.value)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_checkpointing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    from openmm_ddpm.multistate import checkpoints

    digest = checkpoints.save_atomic({"weights": torch.ones(3)}, checkpoints.checkpoint_path(tmp_path, 10))
    monkeypatch.setattr(checkpoints.torch, "save", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoints.save_atomic({"weights": torch.zeros(3)}, checkpoints.checkpoint_path(tmp_path, 15))
    assert checkpoints.list_checkpoints(tmp_path) == [10] and not any(n.startswith(".tmp_") for n in os.listdir(tmp_path))
    assert torch.equal(checkpoints.load_verified(checkpoints.checkpoint_path(tmp_path, 10), digest)["weights"],
                       torch.ones(3))


def test_a_full_disk_while_snapshotting_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    from openmm_ddpm.multistate import snapshots

    storage = tmp_path / "run.nc"
    storage.write_bytes(b"iteration 10")
    (tmp_path / "run_checkpoint.nc").write_bytes(b"checkpoint 10")
    snapshots.take_snapshot(str(storage), 10)
    storage.write_bytes(b"iteration 20, longer")
    snapshots.take_snapshot(str(storage), 20)
    storage.write_bytes(b"iteration 30, longer still")
    monkeypatch.setattr(snapshots.shutil, "copyfile", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        snapshots.take_snapshot(str(storage), 30)  # overwrites the slot of iteration 10
    slot, manifest = snapshots.newest_snapshot(str(storage))
    assert manifest["iteration"] == 20 and open(os.path.join(slot, "run.nc"), "rb").read() == b"iteration 20, longer"
    assert sum(snapshots.read_manifest(str(tmp_path / "run_ddpm" / name)) is not None for name in snapshots.SLOTS) == 1


def test_out_of_memory_in_training_halves_the_batch_and_then_stops_in_one_line(monkeypatch, caplog):
    """A loss that runs out of memory above 64 samples: the trainer goes on at 64, warning once per halving.
    One that always does: a one-line error naming the fix, after halving down to the minimum."""
    from openmm_ddpm.model import OnlineTrainer
    from openmm_ddpm.model.diffusion import EDMDiffusion
    from openmm_ddpm.model.networks import ConditionedMLP
    from openmm_ddpm.settings import TrainingSettings

    def trainer(limit):
        diffusion = EDMDiffusion(ConditionedMLP(4, width=16, depth=1).double())
        original = diffusion.loss

        def loss(features, *args, **kwargs):
            if len(features) > limit:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return original(features, *args, **kwargs)

        monkeypatch.setattr(diffusion, "loss", loss)
        return OnlineTrainer(diffusion, TrainingSettings(batch_size=256), seed=0)

    features, kelvin = torch.randn(500, 4, dtype=torch.float64), torch.full((500,), 300.0, dtype=torch.float64)
    halving = trainer(64)
    assert np.isfinite(halving.step(features, kelvin, 5)) and halving.batch_size == 64 and halving.n_steps_done == 5
    assert sum("halved" in record.message for record in caplog.records) == 2
    with pytest.raises(RuntimeError, match="model.device: cpu") as error:
        trainer(0).step(features, kelvin, 1)
    assert "\n" not in str(error.value)


def test_a_buffer_too_small_to_train_leaves_production_without_proposals_and_says_so(tmp_path, caplog):
    """min_buffer_frames never reached before the freeze: production runs as plain replica exchange, one warning.
    min_buffer_frames = 1: training waits for the two frames the standardization needs instead of failing."""
    from openmmtools import multistate

    from openmm_ddpm import DDPMParallelTemperingSampler
    from openmm_ddpm.multistate.learner import OnlineLearner
    from openmm_ddpm.settings import Settings
    from openmm_ddpm.testsystems import DoubleWell2D

    cache.global_context_cache.empty()
    cache.global_context_cache.platform = openmm.Platform.getPlatformByName("Reference")
    well = DoubleWell2D()
    sampler = DDPMParallelTemperingSampler(number_of_iterations=6, online_analysis_interval=None, freeze_after=3,
                                           training=dict(min_buffer_frames=10 ** 6), proposals=dict(min_training_steps=0))
    sampler.create(states.ThermodynamicState(well.system, 300 * unit.kelvin), states.SamplerState(well.positions),
                   multistate.MultiStateReporter(str(tmp_path / "starved.nc")), temperatures=[300.0, 400.0] * unit.kelvin)
    sampler.run()
    assert sampler.learner.trainer is None and sampler.learner.frozen
    assert sum("without a model" in record.message for record in caplog.records) == 1
    assert sampler.last_iteration_statistics["ddpm_n_candidates"] == 0

    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    settings = Settings(training={"min_buffer_frames": 1, "train_steps": 1}, model={"width": 8, "depth": 1})
    learner = OnlineLearner(settings, molecule.system, molecule.positions.value_in_unit(unit.nanometer))
    learner.prepare()
    learner.buffer.add(molecule.positions.value_in_unit(unit.nanometer)[None], 300.0)
    assert np.isnan(learner.train()) and learner.trainer is None  # one frame: waits
    learner.buffer.add(molecule.positions.value_in_unit(unit.nanometer)[None] + 0.001, 300.0)
    assert np.isfinite(learner.train())
