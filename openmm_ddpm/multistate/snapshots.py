"""Storage snapshots: a run survives a kill that lands inside an openmmtools storage write.

openmmtools writes its NetCDF/HDF5 storage in place; a process killed in the
middle of a write can leave the file unreadable ("NetCDF: HDF error"), and
with it the whole run. At every checkpoint iteration, after openmmtools has
synced the storage, the DDPM samplers copy the storage files (``run.nc`` and
its ``run_checkpoint.nc``) into one of two snapshot slots next to the model
checkpoints, alternately, and write the slot's manifest last, atomically.
A slot without a manifest (its copy was interrupted) is never used, and the
other slot still holds the previous snapshot, so at most one checkpoint
interval is lost wherever the kill lands.

``recover_storage`` runs before a resume (``from_storage`` and ``openmm-ddpm
run`` call it): if the storage cannot be read, the newest complete snapshot
is copied back over it, and the resume goes on from that iteration with the
model checkpoint of the same iteration (kept beside it).
"""
import json
import logging
import os
import shutil
import time

from openmm_ddpm.multistate.checkpoints import _rename_durably, run_directory_of

logger = logging.getLogger(__name__)

SLOTS = ("snapshot_a", "snapshot_b")
MANIFEST = "snapshot.json"


def storage_files(storage):
    """The files of an openmmtools storage: the analysis file and its checkpoint file, where they exist."""
    root, extension = os.path.splitext(os.path.abspath(storage))
    return [path for path in (os.path.abspath(storage), f"{root}_checkpoint{extension}") if os.path.exists(path)]


def read_manifest(slot):
    """A slot's manifest (iteration, files, sizes, time), or None when the slot is incomplete."""
    try:
        with open(os.path.join(slot, MANIFEST)) as stream:
            manifest = json.load(stream)
    except (OSError, ValueError):
        return None
    for name, size in manifest["sizes"].items():
        path = os.path.join(slot, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            return None
    return manifest


def take_snapshot(storage, iteration):
    """Copy the (synced) storage files into the older slot; return the seconds it took.

    The slot's manifest is removed first and written last (atomically), so a
    slot is either complete or ignored.
    """
    started = time.perf_counter()
    directory = run_directory_of(storage)
    slots = [os.path.join(directory, name) for name in SLOTS]
    manifests = [read_manifest(slot) for slot in slots]
    # the slot to overwrite: an incomplete one, else the one with the older iteration
    order = sorted(range(len(slots)), key=lambda k: -1 if manifests[k] is None else manifests[k]["iteration"])
    slot = slots[order[0]]
    os.makedirs(slot, exist_ok=True)
    if os.path.exists(os.path.join(slot, MANIFEST)):
        os.unlink(os.path.join(slot, MANIFEST))
    sizes = {}
    for path in storage_files(storage):
        target = os.path.join(slot, os.path.basename(path))
        shutil.copyfile(path, target)
        with open(target, "rb") as stream:
            os.fsync(stream.fileno())
        sizes[os.path.basename(path)] = os.path.getsize(target)
    temporary = os.path.join(slot, ".tmp_" + MANIFEST)
    with open(temporary, "w") as stream:
        json.dump({"iteration": int(iteration), "sizes": sizes, "written": time.time()}, stream)
        stream.flush()
        os.fsync(stream.fileno())
    _rename_durably(temporary, os.path.join(slot, MANIFEST))
    return time.perf_counter() - started


def storage_is_readable(storage):
    """Whether openmmtools can open the storage and read its last iteration's energies and last checkpoint's states."""
    import netCDF4
    from openmmtools import multistate

    files = storage_files(storage)
    if len(files) < 2:
        return False
    for path in files:  # netCDF4 first: openmmtools retries a failing open for 8 s
        try:
            netCDF4.Dataset(path, "r").close()
        except Exception:  # noqa: BLE001
            return False
    try:
        reporter = multistate.MultiStateReporter(storage, open_mode="r")
    except Exception:  # noqa: BLE001 (HDF5 errors come as RuntimeError, OSError, KeyError ...)
        return False
    try:
        last = reporter.read_last_iteration(last_checkpoint=False)
        reporter.read_energies(last)
        checkpoint = reporter.read_last_iteration(last_checkpoint=True)
        return reporter.read_sampler_states(checkpoint) is not None
    except Exception:  # noqa: BLE001
        return False
    finally:
        reporter.close()


def newest_snapshot(storage):
    """(slot directory, manifest) of the newest complete snapshot, or (None, None)."""
    directory = run_directory_of(storage)
    found = [(read_manifest(os.path.join(directory, name)), os.path.join(directory, name)) for name in SLOTS]
    found = [(manifest, slot) for manifest, slot in found if manifest is not None]
    if not found:
        return None, None
    manifest, slot = max(found, key=lambda pair: pair[0]["iteration"])
    return slot, manifest


def recover_storage(storage):
    """Make ``storage`` resumable: if it cannot be read, restore the newest complete snapshot over it.

    Returns
    -------
    int or None
        The snapshot's iteration when one was restored; None when the storage was fine.

    Raises
    ------
    RuntimeError
        If the storage is unreadable and no complete snapshot exists.
    """
    if not os.path.exists(storage) or storage_is_readable(storage):  # a missing file is openmmtools' to report
        return None
    slot, manifest = newest_snapshot(storage)
    if slot is None:
        raise RuntimeError(f"{storage} cannot be read and no storage snapshot exists in {run_directory_of(storage)}: "
                           "the run cannot be resumed; start it again in a new directory")
    for name in manifest["sizes"]:
        target = os.path.join(os.path.dirname(os.path.abspath(storage)), name)
        temporary = target + ".restoring"
        shutil.copyfile(os.path.join(slot, name), temporary)
        _rename_durably(temporary, target)
    logger.warning(f"{storage} could not be read (killed while writing?): restored the snapshot of iteration "
                   f"{manifest['iteration']}; the iterations after it are run again")
    return int(manifest["iteration"])
