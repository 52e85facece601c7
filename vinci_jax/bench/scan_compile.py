"""Compile cost vs depth: what grows with the number of decoder layers in the decoder's gradient, loop vs scan.

For each depth of `--depths`, builds a family's text decoder (`--family`, `--preset`, or `--hidden` for a small
custom width) abstractly, takes the gradient of sum(decoder(embeds)) over `--rows` x `--length` tokens with respect
to every decoder parameter, and reports the size of the program at each stage: jaxpr equations (all, and the top
level by primitive), StableHLO ops of the lowered module, instructions of the compiled HLO, and the seconds to
trace, lower and compile. `--topology` (e.g. v5p-8; needs libtpu) compiles for that TPU slice on this CPU host,
parameters and activations sharded as the trainers shard them (FSDP over every chip); default: this host's CPU.
Nothing runs. Timings on a shared host are load-dependent: the report carries the load average around each depth.
The JSON object is the last line of output.

    python -m vinci_jax.bench scan_compile --hidden 256 --depths 2,4,8,16
    python -m vinci_jax.bench scan_compile --family qwen3_vl --preset qwen3_vl_8b --topology v5p-8 --length 512
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def _text_config(family: Any, preset: str, hidden: int, layers: int) -> Any:
    """The preset's text config at `layers` layers; `hidden` > 0 rescales it to that width (64-wide heads, 4 query
    heads per kv head, MLP 3x), the size last session's CPU figures were taken at."""
    config = family.preset(preset)
    text = dataclasses.replace(config.text, num_hidden_layers=layers)
    if hidden:
        heads = max(1, hidden // 64)
        kw = dict(hidden_size=hidden, intermediate_size=3 * hidden, num_attention_heads=heads,
                  num_key_value_heads=max(1, heads // 4), vocab_size=256, mrope_section=(8, 12, 12))  # fmt: skip
        if hasattr(text, "head_dim") and "head_dim" in {f.name for f in dataclasses.fields(text)}:
            kw["head_dim"] = 64
        text = dataclasses.replace(text, **kw)
        return dataclasses.replace(config, text=text, vision=dataclasses.replace(config.vision, out_hidden_size=hidden))
    return dataclasses.replace(config, text=text)


def _count_eqns(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _count_eqns(inner)
    return total


def _mesh(topology: str) -> Any:
    from vinci_jax import sharding

    if not topology:
        return sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
    from vinci_jax.aot import topologies

    devices = topologies.topology_devices(topologies.lookup(topology))
    return sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices)


def measure(family_name: str, preset: str, hidden: int, layers: int, scan: bool, rows: int, length: int,
            remat: str, topology: str, attention: str) -> dict[str, Any]:  # fmt: skip
    """Program sizes and seconds of one decoder gradient at `layers` layers."""
    from vinci_jax import sharding
    from vinci_jax.models import families
    from vinci_jax.models.attention import AttentionMask

    family = families.get_family(family_name)
    config = _text_config(family, preset, hidden, layers)
    dtype = jnp.bfloat16 if topology else jnp.float32
    mesh = _mesh(topology)
    with jax.set_mesh(mesh):
        build = dict(dtype=dtype, param_dtype=jnp.float32, remat_policy=remat, attention=attention, scan_layers=scan)
        model = nnx.eval_shape(lambda: family.build(config, rngs=nnx.Rngs(0), **build)).model
        graphdef, params = nnx.split(model)
        shardings = sharding.state_shardings(params, mesh)
        params = jax.tree.map(
            lambda v, s: jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype, sharding=s),
            params, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable),
        )  # fmt: skip
        batch = sharding.named_sharding(mesh, ("batch", None, None), (rows, length, 1))
        rows_sharding = sharding.named_sharding(mesh, ("batch", None), (rows, length))
        embeds = jax.ShapeDtypeStruct((rows, length, config.text.hidden_size), dtype, sharding=batch)
        tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=rows_sharding)

        def loss(p: Any, x: jax.Array, attention_mask: jax.Array) -> jax.Array:
            positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (3, rows, length))
            mask = AttentionMask.for_tokens(attention_mask, shape=(rows, length))
            return jnp.sum(nnx.merge(graphdef, p)(x, positions, mask).astype(jnp.float32))

        grad = jax.jit(jax.grad(loss))
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        jaxpr = jax.make_jaxpr(jax.grad(loss))(params, embeds, tokens)
        trace_s = time.perf_counter() - start
        start = time.perf_counter()
        lowered = grad.lower(params, embeds, tokens)
        lower_s = time.perf_counter() - start
        stablehlo = lowered.as_text()
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
    hlo = compiled.as_text()
    top = collections.Counter(e.primitive.name for e in jaxpr.jaxpr.eqns)
    # opcode of each instruction: "%name = type opcode(" (fusion bodies included)
    opcodes = collections.Counter(re.findall(r" = [^=]*?\b([a-z][a-z0-9-]*)\(", hlo))
    return {
        "layers": layers,
        "scan": scan,
        "parameter_leaves": len(jax.tree.leaves(params)),
        "jaxpr_eqns": _count_eqns(jaxpr.jaxpr),
        "jaxpr_top_eqns": sum(top.values()),
        "jaxpr_top_by_primitive": dict(top.most_common(8)),
        "stablehlo_ops": len(re.findall(r"\bstablehlo\.[a-z_]+", stablehlo)),
        "hlo_instructions": sum(opcodes.values()),
        "hlo_by_opcode": dict(opcodes.most_common(12)),
        "trace_s": round(trace_s, 3),
        "lower_s": round(lower_s, 3),
        "compile_s": round(compile_s, 3),
        "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench scan_compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--family", default="qwen2_5_vl")
    parser.add_argument("--preset", default="tiny", help="the family's size preset (widths; depth from --depths)")
    parser.add_argument("--hidden", type=int, default=0, help="rescale the preset to this hidden width (0: keep)")
    parser.add_argument("--depths", default="2,4,8,16", help="decoder depths (Qwen3-VL presets: at least 3)")
    parser.add_argument("--scan", default="both", choices=["both", "on", "off"])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--remat", default="full")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--topology", default="", help="TPU slice to compile for (needs libtpu); default: CPU")
    args = parser.parse_args(argv)
    if args.topology:
        jax.config.update("jax_platforms", "cpu")  # compile-only TPU devices come from libtpu
    depths = [int(d) for d in args.depths.split(",")]
    scans = {"both": [False, True], "on": [True], "off": [False]}[args.scan]
    results = []
    for scan in scans:
        for layers in depths:
            row = measure(args.family, args.preset, args.hidden, layers, scan, args.rows, args.length, args.remat,
                          args.topology, args.attention)  # fmt: skip
            print(f"scan={scan!s:5} layers={layers:3} eqns={row['jaxpr_eqns']:6} top={row['jaxpr_top_eqns']:6} "
                  f"stablehlo={row['stablehlo_ops']:6} hlo={row['hlo_instructions']:6} "
                  f"compile={row['compile_s']:7.2f}s load={row['loadavg']}", flush=True)  # fmt: skip
            results.append(row)
    return {
        "benchmark": "scan_compile",
        "family": args.family,
        "preset": args.preset,
        "hidden": args.hidden,
        "rows": args.rows,
        "length": args.length,
        "remat": args.remat,
        "topology": args.topology or "cpu",
        "jax": jax.__version__,
        "results": results,
    }
