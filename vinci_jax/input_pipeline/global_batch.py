"""Host-local numpy batches -> global jax.Arrays over the mesh (multi-host safe).

Each process feeds its own rows; `jax.make_array_from_process_local_data` stitches them into one array whose batch
axis is split over the mesh's ("data", "fsdp") axes, so a jitted train step sees the global batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from vinci_jax import sharding

# Which axis of each field is the batch axis (default 0); position_ids are [3, B, L].
BATCH_AXIS: dict[str, int] = {"position_ids": 1}


def _names(field: str, ndim: int) -> tuple[str | None, ...]:
    axis = BATCH_AXIS.get(field, 0)
    return tuple("batch" if d == axis else None for d in range(ndim))


def make_global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays from this process's rows; every field's batch axis is sharded by the `batch` logical rule."""
    out: dict[str, Any] = {}
    count = jax.process_count()
    for field, local in batch.items():
        local = np.asarray(local)
        axis = BATCH_AXIS.get(field, 0)
        global_shape = list(local.shape)
        global_shape[axis] *= count
        spec = sharding.logical_to_spec(_names(field, local.ndim), global_shape, mesh)
        out[field] = jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local, tuple(global_shape))
    return out
