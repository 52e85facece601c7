"""Orbax checkpointing shared by SFT and ViRL: train state + data iterator state, async, keep last N, atomic.

Layout: WORKDIR/checkpoints/<step>/{state, data_iter}. `state` is any pytree of jax.Arrays (params, optimizer state,
step); `data_iter` holds one JSON file per process with that process's iterator state (per-host data sharding means
each host resumes its own stream). Orbax writes each step into a temporary directory and renames it when complete,
so a process killed mid-save leaves the previous step intact; a step directory that is damaged anyway (a disk
error, a half-copied directory) fails to restore and we fall back to the previous one with a warning, moving the
damaged directory aside so new saves at that step number can proceed.

Restores target the *current* mesh: the caller passes ShapeDtypeStructs carrying the shardings it wants (see
`train_state.abstract_train_state`), so a checkpoint written on one mesh shape restores onto another.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from vinci_jax.paths import as_path

STATE = "state"
DATA_ITER = "data_iter"


def merged_shard_state(directory: epath.PathLike) -> dict[str, Any] | None:
    """All processes' per-data-shard iterator states in one `{"data_shards": {...}}`, so a run with another process
    count (same data shards) resumes every shard where it stopped; None when the states are not per shard."""
    shards: dict[str, Any] = {}
    files = sorted(as_path(directory).glob("process_*-of-*.json"))
    for path in files:
        payload = json.loads(path.read_text())
        state = payload.get("state")
        if payload.get("bytes") or not isinstance(state, dict) or "data_shards" not in state:
            return None
        shards.update(state["data_shards"])
    return {"data_shards": shards} if files else None


class IteratorStateHandler(ocp.CheckpointHandler):
    """Saves a snapshot of this process's data iterator state as JSON (`process_<i>-of-<n>.json`).

    The snapshot is taken by the caller at save time (not by the handler later), so an asynchronous save can never
    record an iterator position that is ahead of the saved parameters.
    """

    def save(self, directory: epath.Path, args: IteratorStateSave) -> None:
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        state = args.state.decode() if isinstance(args.state, bytes) else args.state
        (directory / name).write_text(json.dumps({"bytes": isinstance(args.state, bytes), "state": state}))

    def restore(self, directory: epath.Path, args: IteratorStateRestore | None = None) -> Any:
        path = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if not path.exists():
            merged = merged_shard_state(directory)
            if merged is None:
                raise FileNotFoundError(
                    f"{path} is missing: the checkpoint was written by a different number of processes "
                    f"({jax.process_count()} now) and its data state is not per data shard"
                )
            return merged
        payload = json.loads(path.read_text())
        return payload["state"].encode() if payload["bytes"] else payload["state"]

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    pass


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    data_state: Any | None


class CheckpointManager:
    """Thin policy layer over `ocp.CheckpointManager`: what we save, how often, and how restores fall back."""

    def __init__(
        self,
        directory: epath.PathLike,
        *,
        max_to_keep: int = 3,
        save_interval_steps: int = 100,
        async_save: bool = True,
    ):
        self.directory = as_path(directory)
        self.save_interval_steps = max(int(save_interval_steps), 1)
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=save_interval_steps,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(self.directory, options=self._options, item_names=(STATE, DATA_ITER))

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """Every `save_interval_steps` steps (Orbax's own policy would also save the very first step)."""
        return step % self.save_interval_steps == 0

    def save(self, step: int, state: Any, data_state: Any | None = None, *, force: bool = False) -> bool:
        """Start saving `state` (and the iterator snapshot) at `step`; returns whether a save was started."""
        if not force and not self.should_save(step):
            return False
        if step in self._manager.all_steps():
            return False
        items: dict[str, Any] = {STATE: ocp.args.StandardSave(state)}
        if data_state is not None:
            items[DATA_ITER] = IteratorStateSave(data_state)
        return bool(self._manager.save(step, args=ocp.args.Composite(**items), force=True))

    def reached_preemption(self, step: int) -> bool:
        """True on every process once any has received a preemption notice (multi-host; needs jax.distributed)."""
        if jax.process_count() == 1:
            return False
        return bool(self._manager.reached_preemption(step))

    def restore_latest(self, abstract_state: Any, *, with_data: bool = True) -> Restored | None:
        """Restore the newest readable step onto `abstract_state`'s shardings; None when there is no checkpoint.

        A step that fails to restore is reported with a warning, moved aside (`corrupt-<step>-<time>`) and the next
        older one is tried.
        """
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self._restore_step(step, abstract_state, with_data)
            except Exception as err:  # noqa: BLE001 - any failure means this step is unusable
                message = (
                    f"checkpoint step {step} in {self.directory} could not be restored ({type(err).__name__}: "
                    f"{str(err)[:300]}); falling back to the previous checkpoint"
                )
                logging.warning("%s", message)
                import warnings

                warnings.warn(message, RuntimeWarning, stacklevel=2)
                self._move_aside(step)
        return None

    def _restore_step(self, step: int, abstract_state: Any, with_data: bool) -> Restored:
        items: dict[str, Any] = {STATE: ocp.args.StandardRestore(abstract_state)}
        data_dir = self.directory / str(step) / DATA_ITER
        has_data = (data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json").exists()
        if with_data and data_dir.exists() and not has_data:
            # Written by a different number of processes: per-data-shard states still map (each process takes its
            # shards'); other stream states do not, but the train state is still good (it restores onto any mesh).
            # Never treat that as corruption.
            has_data = merged_shard_state(data_dir) is not None
            if not has_data:
                logging.warning(
                    "checkpoint step %d holds data-iterator state for another process count than %d; restoring the "
                    "train state only (the data stream restarts from its beginning)",
                    step,
                    jax.process_count(),
                )
        if with_data and has_data:
            items[DATA_ITER] = IteratorStateRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        data_state = restored[DATA_ITER] if with_data and has_data else None
        return Restored(step=step, state=restored[STATE], data_state=data_state)

    def _move_aside(self, step: int) -> None:
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            source = self.directory / str(step)
            if source.exists():
                source.rename(self.directory / f"corrupt-{step}-{int(time.time())}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"vinci_jax_ckpt_move_aside_{step}")
        self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
