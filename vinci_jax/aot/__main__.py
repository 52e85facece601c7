"""`python -m vinci_jax.aot --config configs/virl.py:qwen3_vl_8b --topology v5p-64 [--config.x=y ...]`

Will it fit? Compiles every program of an SFT or ViRL job for a Cloud TPU slice on this (CPU) machine and prints,
per program and per chip: argument / output / aliased / temporary bytes, the total against the chip's HBM, compiled
and analytic FLOPs, a roofline time and MFU ceiling, the five largest temporaries, and the compile seconds. The JSON
report is the last line of output (and `--json_out`). Exits 3 naming every program over `--hbm_fraction` of HBM (or
that failed to compile), 2 on a bad topology or program name.

Programs: sft_train_step (SFT); grpo_grad, grpo_apply, sampler_prefill, sampler_decode, reward_encoder,
vision_tower (ViRL). `--num_layers N` compiles N and 2N decoder layers and extrapolates linearly to the model's
depth (the output says so): full-depth 8B compiles take minutes each on a small CPU host.
Model options pass through as config overrides, e.g. `--config.model.remat=full`, `--config.model.attention=...`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/sft.py or configs/virl.py, with ':preset'.")
_TOPOLOGY = flags.DEFINE_string("topology", "v5e-4", "Cloud TPU slice (v5p-64, v5e-256, v6e-64, ...) or v5e:2x2.")
_PROGRAMS = flags.DEFINE_list("programs", [], "Programs to compile (default: all of the job's).")
_HBM_FRACTION = flags.DEFINE_float("hbm_fraction", 0.9, "Budget per chip as a fraction of its HBM.")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 0, "Compile N and 2N decoder layers and extrapolate (0: full).")
_IMAGE_TOKENS = flags.DEFINE_integer("image_tokens", 1024, "Merged vision tokens of the one image per prompt/row.")
_REWARD_CROPS = flags.DEFINE_integer("reward_crops", 0, "Crops per reward-encoder call (0: the largest crop bucket).")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Also write the JSON report to this file.")
flags.mark_flag_as_required("config")


def _prepare_backend() -> None:
    """Compile-only TPU devices come from libtpu; JAX itself runs on the CPU (nothing executes)."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    import jax

    jax.config.update("jax_platforms", "cpu")


def _compile_all(config: Any, topology: Any, devices: list, wanted: list[str], layers: int | None) -> list[Any]:
    from vinci_jax import sharding
    from vinci_jax.aot.programs import build_programs
    from vinci_jax.aot.report import compile_program

    if layers:
        with config.unlocked():
            config.model.num_layers = layers
    mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
    programs = build_programs(config, mesh, _IMAGE_TOKENS.value, _REWARD_CROPS.value)
    known = [p.name for p in programs]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        print(f"error: unknown programs {unknown}; this job has {known}", file=sys.stderr)
        sys.exit(2)
    reports = []
    for program in programs:
        if wanted and program.name not in wanted:
            continue
        print(f"compiling {program.name} ({program.note}) for {topology.name}"
              + (f" with {layers} decoder layers" if layers else "") + " ...", flush=True)  # fmt: skip
        reports.append(compile_program(program, mesh))
    return reports


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    _prepare_backend()
    from vinci_jax.aot import report as report_lib
    from vinci_jax.aot import topologies
    from vinci_jax.train.model import resolve_model

    try:
        topology = topologies.lookup(_TOPOLOGY.value)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        sys.exit(2)
    devices = topologies.topology_devices(topology)
    config = _CONFIG.value
    full_layers = int(resolve_model(config.model)[1].text.num_hidden_layers)
    layers = _NUM_LAYERS.value
    wanted = list(_PROGRAMS.value)
    if layers and 2 * layers < full_layers:
        small = _compile_all(config, topology, devices, wanted, layers)
        large = _compile_all(config, topology, devices, wanted, 2 * layers)
        reports = [report_lib.extrapolate(s, b, (layers, 2 * layers), full_layers)
                   for s, b in zip(small, large, strict=True)]  # fmt: skip
    else:
        reports = _compile_all(config, topology, devices, wanted, None)
    rows = [r.summary(topology, _HBM_FRACTION.value) for r in reports]
    print(report_lib.format_table(rows, topology))
    over = [r for r in rows if not r["fits"]]
    for r in over:
        why = "failed to compile" if r["error"] else (
            f"needs {r['total_gib']:.1f} GiB per chip, over the budget of {r['budget_bytes'] / 2**30:.1f} GiB "
            f"({_HBM_FRACTION.value:.0%} of {r['hbm_bytes'] / 2**30:.0f} GiB) by "
            f"{-r['headroom_bytes'] / 2**30:.1f} GiB"
        )  # fmt: skip
        print(f"DOES NOT FIT: {r['name']} on {topology.name}: {why}", file=sys.stderr)
    result = {
        "config": f"{config.job}:{config.get('preset', '')}",
        "topology": topology.name,
        "topology_name": topology.topology_name,
        "chips": topology.chips,
        "mesh": dict(config.mesh.to_dict()),
        "hbm_bytes_per_chip": topology.chip.hbm_bytes,
        "peak_bf16_flops_per_chip": topology.chip.peak_bf16_flops,
        "hbm_fraction": _HBM_FRACTION.value,
        "decoder_layers": full_layers,
        "compiled_layers": [layers, 2 * layers] if layers and 2 * layers < full_layers else [full_layers],
        "image_tokens": _IMAGE_TOKENS.value,
        "programs": rows,
        "over_budget": [r["name"] for r in over],
    }
    line = json.dumps(result, default=str)
    if _JSON_OUT.value:
        Path(_JSON_OUT.value).write_text(line + "\n")
    print(line, flush=True)
    if over:
        sys.exit(3)


if __name__ == "__main__":
    app.run(main)
