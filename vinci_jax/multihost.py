"""Host-side exchange between the processes of a multi-controller run (no-ops in a single process).

Small values (shape agreements, rewards, prompt lists) travel through `jax.experimental.multihost_utils`, i.e. a
collective over the devices, so the same code runs on a TPU pod and in a 2-process gloo test on one CPU machine.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def allgather_ints(values: Sequence[int]) -> np.ndarray:
    """[P, n] int64: every process's `values` (P = process count; one row in a single process)."""
    local = np.asarray(values, np.int64).reshape(1, -1)
    if not is_multiprocess():
        return local
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(local, tiled=True)).reshape(jax.process_count(), -1)


def max_over_processes(values: Sequence[int]) -> list[int]:
    """Element-wise maximum of `values` over all processes (e.g. agreeing on a bucket every host can use)."""
    return [int(v) for v in allgather_ints(values).max(axis=0)]


def allgather_floats(values: np.ndarray) -> np.ndarray:
    """[P * n] float64: every process's equally long float vector, in process order."""
    local = np.asarray(values, np.float64).reshape(-1)
    if not is_multiprocess():
        return local
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(local[None], tiled=True)).reshape(-1)


def allgather_objects(obj: Any) -> list[Any]:
    """Every process's picklable `obj`, in process order (lengths first, then the padded bytes)."""
    if not is_multiprocess():
        return [obj]
    from jax.experimental import multihost_utils

    payload = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    lengths = allgather_ints([len(payload)])[:, 0]
    padded = np.zeros((1, int(lengths.max())), np.uint8)
    padded[0, : len(payload)] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded, tiled=True))
    return [pickle.loads(gathered[p, : int(n)].tobytes()) for p, n in enumerate(lengths)]


def to_host(x: Any) -> np.ndarray:
    """A jax.Array as numpy, gathering the shards other processes hold when it is not fully addressable here."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
