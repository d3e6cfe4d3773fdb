"""Replay buffer, streaming move, and crash-safe checkpoints."""
import os

import numpy as np
import pytest
import torch
from openmm import unit
from openmmtools import cache, states, utils

from openmm_ddpm.moves import StreamingLangevinMove
from openmm_ddpm.multistate.buffer import ReplayBuffer
from openmm_ddpm.multistate.checkpoints import (
    checkpoint_path,
    list_checkpoints,
    load_verified,
    prune_checkpoints,
    save_atomic,
)


def test_buffer_keeps_the_newest_frames_in_order():
    buffer = ReplayBuffer(capacity=5, n_atoms=1)
    for i in range(7):
        buffer.add(np.full((1, 1, 3), i), 300.0 + i)
    positions, temperatures = buffer.arrays()
    assert len(buffer) == 5 and buffer.n_added == 7
    assert positions[:, 0, 0].tolist() == [2, 3, 4, 5, 6]
    assert temperatures.tolist() == [302, 303, 304, 305, 306]
    buffer.add(np.arange(12, dtype=float).reshape(4, 1, 3), [1.0, 2.0, 3.0, 4.0])
    assert buffer.arrays()[1].tolist() == [306, 1, 2, 3, 4]


def test_buffer_state_round_trip_and_refuses_nan():
    buffer = ReplayBuffer(capacity=4, n_atoms=2)
    buffer.add(np.random.default_rng(0).normal(size=(6, 2, 3)), 450.0)
    again = ReplayBuffer.from_state_dict(buffer.state_dict())
    assert np.array_equal(again.arrays()[0], buffer.arrays()[0]) and again.n_added == 6
    with pytest.raises(ValueError, match="non-finite"):
        buffer.add(np.full((1, 2, 3), np.nan), 300.0)


def test_streaming_move_records_every_stride_and_serializes(double_well):
    move = StreamingLangevinMove(stream_stride=25, n_steps=100, timestep=2.0 * unit.femtosecond)
    thermodynamic_state = states.ThermodynamicState(double_well.system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(double_well.minimum_positions(0))
    move.apply(thermodynamic_state, sampler_state)
    frames = move.pop_frames()
    assert frames.shape == (4, 1, 3) and move.streamed_frames == []
    assert np.allclose(frames[-1], sampler_state.positions.value_in_unit(unit.nanometer))
    assert len({tuple(f.ravel()) for f in frames}) == 4  # the dynamics moved between frames
    assert move.n_steps == 100
    restored = utils.deserialize(utils.serialize(move))
    assert isinstance(restored, StreamingLangevinMove) and restored.stream_stride == 25 and restored.n_steps == 100
    with pytest.raises(ValueError, match="divide"):
        StreamingLangevinMove(stream_stride=30, n_steps=100)


def test_seeded_streaming_move_reproduces_its_trajectory(double_well):
    def frames(seed):
        move = StreamingLangevinMove(stream_stride=25, n_steps=100, timestep=2.0 * unit.femtosecond, random_seed=seed)
        thermodynamic_state = states.ThermodynamicState(double_well.system, 300 * unit.kelvin)
        sampler_state = states.SamplerState(double_well.minimum_positions(0))
        move.apply(thermodynamic_state, sampler_state, cache.ContextCache())  # a fresh Context each time
        return move.pop_frames()

    assert np.array_equal(frames(17), frames(17))
    assert not np.allclose(frames(17), frames(18))
    assert not np.allclose(frames(None), frames(None))  # unseeded: OpenMM draws a seed per Context
    restored = utils.deserialize(utils.serialize(StreamingLangevinMove(stream_stride=25, n_steps=100, random_seed=17)))
    assert restored.random_seed == 17
    with pytest.raises(ValueError, match="random_seed"):
        StreamingLangevinMove(stream_stride=25, n_steps=100, random_seed=0)


def test_streaming_move_without_recording_runs_the_same_trajectory(double_well):
    """recording=False (the production phase) runs n_steps in one call: the same seeded trajectory, no frames."""
    def final_state(recording):
        move = StreamingLangevinMove(stream_stride=25, n_steps=100, timestep=2.0 * unit.femtosecond, random_seed=17)
        move.recording = recording
        thermodynamic_state = states.ThermodynamicState(double_well.system, 300 * unit.kelvin)
        sampler_state = states.SamplerState(double_well.minimum_positions(0))
        move.apply(thermodynamic_state, sampler_state, cache.ContextCache())
        velocities = sampler_state.velocities.value_in_unit(unit.nanometer / unit.picosecond)
        return sampler_state.positions.value_in_unit(unit.nanometer), velocities, len(move.pop_frames())

    chunked, whole = final_state(True), final_state(False)
    assert chunked[2] == 4 and whole[2] == 0
    assert np.allclose(chunked[0], whole[0], rtol=0, atol=1e-12) and np.allclose(chunked[1], whole[1], rtol=0, atol=1e-12)
    assert not np.allclose(chunked[0], double_well.minimum_positions(0).value_in_unit(unit.nanometer))  # it moved


def test_checkpoint_round_trip_hash_and_pruning(tmp_path):
    state = {"weights": torch.arange(5.0), "iteration": 10, "nested": {"rng": {"state": 2**100}}}
    digest = save_atomic(state, checkpoint_path(tmp_path, 10))
    loaded = load_verified(checkpoint_path(tmp_path, 10), digest)
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["nested"]["rng"]["state"] == 2**100
    with pytest.raises(ValueError, match="hash"):
        load_verified(checkpoint_path(tmp_path, 10), "0" * 64)
    for iteration in (15, 20, 25):
        save_atomic(state, checkpoint_path(tmp_path, iteration))
    (tmp_path / ".tmp_partial.pt").write_bytes(b"half a checkpoint")
    assert list_checkpoints(tmp_path) == [10, 15, 20, 25]
    prune_checkpoints(tmp_path, keep=2)
    assert list_checkpoints(tmp_path) == [20, 25] and sorted(os.listdir(tmp_path)) == [
        "ddpm_checkpoint_00000020.pt", "ddpm_checkpoint_00000025.pt"]


class NotAllowed:
    pass


def test_loading_never_unpickles_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"object": NotAllowed()}, path)
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_verified(str(path))
