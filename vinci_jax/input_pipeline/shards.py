"""Data shards: the unit of per-host data loading, fixed independently of how many processes read them.

A run has S data shards (0 in a config: one per process). Shard s reads every S-th source element and fills
batch/S rows of every batch; process p of P reads shards p*S/P ... (p+1)*S/P - 1 and concatenates their batches in
order. With a fixed S, the global batch does not depend on the process count: one process reading both shards of
S=2 sees exactly what two processes see together, which is what makes multi-host runs testable on one machine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax


def local_shards(data_shards: int, batch_size: int) -> tuple[range, int]:
    """(the shards this process reads, the number of shards S) for `data_shards` (0: one per process)."""
    count, index = jax.process_count(), jax.process_index()
    shards = data_shards or count
    if data_shards < 0 or shards % count:
        raise ValueError(f"data_shards={data_shards} must be 0 or a positive multiple of the {count} processes")
    if batch_size % shards:
        raise ValueError(f"the global batch of {batch_size} does not divide over {shards} data shards")
    per_process = shards // count
    return range(index * per_process, (index + 1) * per_process), shards


class ShardIterators:
    """The iterators of this process's shards, stepped together, with one checkpointable state for all of them."""

    def __init__(self, shards: Sequence[int], iterators: Sequence[Iterator[Any]]):
        self.shards, self.iterators = list(shards), list(iterators)

    def next_all(self) -> list[Any]:
        return [next(it) for it in self.iterators]

    def get_state(self) -> dict[str, Any]:
        """{"data_shards": {shard: Grain state}}: labelled by shard, so a checkpoint written by P processes resumes
        with any other process count that divides the shards (`checkpoint.merged_shard_state`)."""
        return {"data_shards": {str(s): it.get_state() for s, it in zip(self.shards, self.iterators, strict=True)}}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore from `get_state()` output (extra shards, other processes', are ignored) or, for one local shard,
        from a plain Grain state (checkpoints written before states were labelled by shard)."""
        per_shard = state.get("data_shards") if isinstance(state, dict) else None
        if per_shard is None:
            if len(self.iterators) != 1:
                raise ValueError(f"a single-shard data state cannot restore {len(self.iterators)} local data shards")
            self.iterators[0].set_state(state)
            return
        missing = sorted(set(map(str, self.shards)) - set(per_shard))
        if missing:
            raise ValueError(f"the data state has no position for shards {missing} (it holds {sorted(per_shard)})")
        for shard, iterator in zip(self.shards, self.iterators, strict=True):
            iterator.set_state(per_shard[str(shard)])
