"""Attention memory: compiled temporary memory of one decoder layer's gradient, per attention implementation.

Compiles (does not run) forward + backward of the first decoder layer of a family preset (default Qwen2.5-VL-7B) on
`--rows` left-padded rows of `--length` tokens, once per `--implementations` entry, and reports XLA's
`temp_size_in_bytes` (or, where it does not fit the chip, the temporaries XLA says it needed) and whether any
[.., L, L] array is left in the optimized HLO. With `--topology` (e.g.
v5e:2x2, needs libtpu; the host may be CPU-only) it lowers for one chip of that TPU topology, so the splash kernel
is the real Mosaic kernel, not the interpreter. The JSON object is the last line of output.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _mesh(topology: str) -> Any:
    from vinci_jax import sharding

    if not topology:
        return sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # a second libtpu user on this host is fine for AOT
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
    return sharding.make_mesh({"data": 1}, devices=devices[:1])


def layer_temp(family_name: str, preset: str, rows: int, length: int, implementation: str, mesh: Any) -> dict:
    """temp bytes and [L, L] presence for one decoder layer's gradient under `implementation`."""
    from vinci_jax.models import families
    from vinci_jax.models.attention import AttentionMask

    family = families.get_family(family_name)
    config = family.preset(preset)
    text = config.text
    model = nnx.eval_shape(
        lambda: family.build(
            config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32, attention=implementation
        )  # fmt: skip
    )
    layer = model.model.layers[0]
    graphdef, params = nnx.split(layer)

    def loss(params, x, cos, sin, attention_mask):
        mask = AttentionMask.for_tokens(attention_mask, shape=attention_mask.shape)
        out = nnx.merge(graphdef, params)(x, cos, sin, mask)
        return jnp.sum(out.astype(jnp.float32))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    shapes = (
        jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params),
        jax.ShapeDtypeStruct((rows, length, text.hidden_size), jnp.bfloat16),
        jax.ShapeDtypeStruct((rows, length, text.head_dim), jnp.bfloat16),
        jax.ShapeDtypeStruct((rows, length, text.head_dim), jnp.bfloat16),
        jax.ShapeDtypeStruct((rows, length), jnp.int32),
    )
    platform = str(np.asarray(mesh.devices).flat[0].platform)
    with jax.set_mesh(mesh):
        lowered = grad.lower(*shapes)
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:  # the chip's HBM cannot hold it: XLA says how much it needed
            needed = re.search(r"HLO temporaries \(([0-9.]+)G\)", str(e))
            if "RESOURCE_EXHAUSTED" not in str(e) or not needed:
                raise
            return {"temp_bytes": int(float(needed.group(1)) * 2**30), "fits": False, "platform": platform,
                    "has_LxL_buffer": None}  # fmt: skip
    hlo = compiled.as_text()
    square = re.compile(rf"\[[0-9,]*\b{length},{length}\]")
    return {
        "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
        "has_LxL_buffer": bool(square.search(hlo)),
        "fits": True,
        "platform": platform,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m vinci_jax.bench attention_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--family", default="qwen2_5_vl", help="qwen2_5_vl | qwen3_vl")
    parser.add_argument("--preset", default="7b", help="the family's size preset")
    parser.add_argument("--rows", type=int, default=1, help="rows per device")
    parser.add_argument("--length", type=int, default=16384, help="tokens per row")
    parser.add_argument("--implementations", default="xla,splash", help="comma-separated attention implementations")
    parser.add_argument("--topology", default="", help="TPU topology to lower for (e.g. v5e:2x2); '' = local backend")
    args = parser.parse_args(argv)
    mesh = _mesh(args.topology)
    results = {
        impl: layer_temp(args.family, args.preset, args.rows, args.length, impl, mesh)
        for impl in args.implementations.split(",")
    }
    for impl, r in results.items():
        print(f"{impl:8s} temp {r['temp_bytes'] / 2**30:8.2f} GiB  fits: {r['fits']}  [L, L]: {r['has_LxL_buffer']}")
    return {"bench": "attention_memory", **vars(args), "results": results}
