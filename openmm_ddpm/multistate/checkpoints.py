"""Crash-safe checkpoints: atomic writes, content hashes, safe loading.

A run's checkpoints live in ``<storage without extension>_ddpm/``
(``run_directory_of``), one file per checkpoint iteration, with the SHA-256
of each recorded in the openmmtools storage; ``newest_intact_checkpoint``
returns the newest one whose hash matches. A checkpoint is written to a temporary file in the same directory, flushed
and fsync'ed, then renamed over the final name (atomic on POSIX), and the
directory is fsync'ed. A killed writer leaves at worst a stray temporary
file, never a truncated checkpoint. Loading uses ``torch.load(...,
weights_only=True)``: no arbitrary code is unpickled.
"""
import hashlib
import logging
import os
import pickle
import re
import tempfile
import zipfile

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^ddpm_checkpoint_(\d+)\.pt$")


def checkpoint_path(directory, iteration):
    """Path of the checkpoint of an iteration."""
    return os.path.join(directory, f"ddpm_checkpoint_{int(iteration):08d}.pt")


def save_atomic(state, path):
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically.

    Returns
    -------
    str
        SHA-256 of the written file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        digest = file_sha256(temporary)
        _rename_durably(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return digest


def _rename_durably(source, destination):
    os.replace(source, destination)
    directory = os.open(os.path.dirname(os.path.abspath(destination)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def file_sha256(path):
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_verified(path, expected_sha256=None):
    """Load a checkpoint without unpickling code; check its hash if given.

    Raises
    ------
    ValueError
        If the file's hash differs from ``expected_sha256``, it cannot be read
        (truncated, corrupted), or it holds pickled objects (never executed).
    """
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise ValueError(f"{path} does not match the hash (SHA-256) recorded when it was written: changed or corrupted since")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} holds objects other than tensors, numbers and strings, refused without being "
                         f"executed: {first_line(error)}") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} cannot be read, truncated or corrupted ({first_line(error)}): "
                         "write it again") from error


def first_line(error, limit=120):
    """The first line of an error's message, at most ``limit`` characters (for one-line errors)."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def list_checkpoints(directory):
    """Iterations that have a checkpoint file in ``directory``, ascending."""
    if not os.path.isdir(directory):
        return []
    matches = (CHECKPOINT_PATTERN.match(name) for name in os.listdir(directory))
    return sorted(int(m.group(1)) for m in matches if m)


def prune_checkpoints(directory, keep):
    """Delete all but the newest ``keep`` checkpoints and stray temporary files."""
    for iteration in list_checkpoints(directory)[:-keep]:
        os.unlink(checkpoint_path(directory, iteration))
    for name in os.listdir(directory):
        if name.startswith(".tmp_"):
            os.unlink(os.path.join(directory, name))


def run_directory_of(storage):
    """Directory of a run's DDPM checkpoints: ``<storage without extension>_ddpm``."""
    root, _ = os.path.splitext(os.path.abspath(storage))
    return root + "_ddpm"


def newest_intact_checkpoint(reporter, max_iteration=None):
    """The newest DDPM checkpoint whose SHA-256 matches the one recorded in storage.

    Parameters
    ----------
    reporter : openmmtools.multistate.MultiStateReporter
        Open reporter of the run.
    max_iteration : int, optional
        Ignore checkpoints of later iterations.

    Returns
    -------
    state : dict or None
    iteration : int or None
    """
    directory = run_directory_of(reporter.filepath)
    iterations = [i for i in list_checkpoints(directory) if max_iteration is None or i <= max_iteration]
    for iteration in reversed(iterations):
        try:
            recorded = reporter.read_dict(f"ddpm_checkpoint_{iteration}")["sha256"]
            return load_verified(checkpoint_path(directory, iteration), recorded), iteration
        except Exception as error:  # missing record, hash mismatch, unreadable file
            logger.warning(f"skipping DDPM checkpoint of iteration {iteration}: {error}")
    return None, None
