"""The `demo` job: run each stage the config lists, in order, on tiny data, and say what each one did.

Stages are registered here by name; a stage is a real part of the system (never a stand-in), so the demo doubles as
the smoke test of an install.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ml_collections

StageFn = Callable[[ml_collections.ConfigDict], str]
STAGES: dict[str, StageFn] = {}


def stage(name: str) -> Callable[[StageFn], StageFn]:
    def register(fn: StageFn) -> StageFn:
        STAGES[name] = fn
        return fn

    return register


@stage("env")
def env_stage(config: ml_collections.ConfigDict) -> str:
    """A jitted, sharded computation over the configured mesh, checked against numpy."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vinci_jax import sharding

    mesh = sharding.make_mesh(config.mesh)
    x = np.arange(8 * 16, dtype=np.float32).reshape(8, 16)
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, sharding.named_sharding(mesh, ("batch", None)))
        y = jax.jit(lambda a: jnp.tanh(a / 100.0) @ a.T)(xs)
    expected = np.tanh(x / 100.0) @ x.T
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-3)
    return f"mesh {dict(mesh.shape)} ok"


def run(config: ml_collections.ConfigDict) -> None:
    names = [s.strip() for s in str(config.stages).split(",") if s.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown demo stages {unknown}; known: {sorted(STAGES)}")
    for name in names:
        start = time.perf_counter()
        summary = STAGES[name](config)
        print(f"[demo] {name}: {summary} ({time.perf_counter() - start:.1f}s)", flush=True)
    print("[demo] done", flush=True)
