"""How a DDPM run is stored, checkpointed, snapshotted and resumed: the persistence half of the samplers.

At every storage checkpoint iteration the whole learning state is saved
atomically next to the storage, its SHA-256 recorded in storage
(``checkpoints``), and after openmmtools has synced the storage its files
are snapshotted (``snapshots``). ``from_storage`` restores an unreadable
storage from its newest snapshot, refuses a plain openmmtools storage, and
brings back the learning state of the newest intact checkpoint not newer
than the iteration openmmtools resumes from. ``DDPMSamplerMixin`` inherits
this; it relies on the sampler's ``_learner``, ``_new_learner``,
``plain_reason`` and ``_ddpm_iteration_statistics``.
"""
import logging

import mpiplus

from openmm_ddpm._version import __version__
from openmm_ddpm.multistate.checkpoints import (
    checkpoint_path,
    newest_intact_checkpoint,
    prune_checkpoints,
    run_directory_of,
    save_atomic,
)
from openmm_ddpm.multistate.snapshots import recover_storage, take_snapshot
from openmm_ddpm.multistate.support import warn_plain_replica_exchange

logger = logging.getLogger(__name__)

CHECKPOINTS_KEPT = 3


class PersistenceMixin:
    """Checkpoints, snapshots and resume of a DDPM sampler (see the module docstring)."""

    @property
    def run_directory(self):
        """Directory of the model checkpoints, next to the storage file."""
        return run_directory_of(self._reporter.filepath)

    def _checkpoint_if_due(self):
        """Save the learning state at storage checkpoint iterations; return its hash ('' if none)."""
        if self._iteration % self._reporter.checkpoint_interval != 0:
            return ""
        path = checkpoint_path(self.run_directory, self._iteration)
        digest = save_atomic(self._learner.state_dict(self._iteration), path)
        prune_checkpoints(self.run_directory, keep=CHECKPOINTS_KEPT)
        return digest

    @mpiplus.on_single_node(rank=0, broadcast_result=False, sync_nodes=False)
    @mpiplus.delayed_termination
    def _report_iteration_items(self):
        super()._report_iteration_items()
        statistics = dict(self._ddpm_iteration_statistics or {})
        digest = statistics.pop("ddpm_checkpoint_sha256", "")
        if statistics:
            self._reporter.write_online_analysis_data(self._iteration, **statistics)
        if digest:
            self._reporter.write_dict(f"ddpm_checkpoint_{self._iteration}", {"sha256": digest, "package_version": __version__})

    def _report_iteration(self):
        """openmmtools' report (ending in a sync of the storage), then at checkpoint iterations a storage snapshot."""
        super()._report_iteration()
        if self._iteration % self._reporter.checkpoint_interval == 0:
            mpiplus.run_single_node(0, self._snapshot_storage, broadcast_result=False)

    def _snapshot_storage(self):
        seconds = take_snapshot(self._reporter.filepath, self._iteration)
        logger.debug(f"storage snapshot of iteration {self._iteration} in {seconds:.3f} s")

    @classmethod
    def from_storage(cls, storage):
        """openmmtools' ``from_storage``; a storage path that cannot be read is first restored from its newest
        snapshot (``openmm_ddpm.multistate.snapshots.recover_storage``)."""
        if isinstance(storage, str):
            mpiplus.run_single_node(0, recover_storage, storage, broadcast_result=False, sync_nodes=True)
        return super().from_storage(storage)

    @classmethod
    def _instantiate_sampler_from_reporter(cls, reporter):
        if "representation" not in reporter.read_dict("options"):  # stored by every DDPM sampler's create
            raise ValueError(f"{reporter.filepath} was written by a plain openmmtools sampler: resume it with "
                             "openmmtools' own class, or train a model on it (openmm-ddpm train)")
        return super()._instantiate_sampler_from_reporter(reporter)

    def _restore_sampler_from_reporter(self, reporter):
        super()._restore_sampler_from_reporter(reporter)
        mpiplus.run_single_node(0, self._restore_learner, reporter, broadcast_result=False)

    def _restore_learner(self, reporter):
        """Load the newest intact checkpoint not newer than the restored iteration."""
        if self.plain_reason is not None:
            warn_plain_replica_exchange(self.plain_reason)
            return
        state, iteration = newest_intact_checkpoint(reporter, max_iteration=self._iteration)
        if state is None:
            logger.warning("no intact DDPM checkpoint found: the model starts from scratch")
            return
        self._learner = self._new_learner()
        self._learner.prepare()
        self._learner.load_state_dict(state)
        self._learner.restored_from_iteration = iteration
        logger.info(f"restored the DDPM learning state of iteration {iteration}")
