"""`python -m vinci_jax.aot --config configs/virl.py:qwen3_vl_8b --topology v5p-64 [--config.x=y ...]`

Will it fit? Compiles every program of an SFT or ViRL job for a Cloud TPU slice on this (CPU) machine and prints,
per program and per chip: argument / output / aliased / temporary bytes, the total against the chip's HBM, compiled
and analytic FLOPs, a roofline time and MFU ceiling, the five largest temporaries, and the compile seconds. The JSON
report is the last line of output (and `--json_out`). Exits 3 naming every program over `--hbm_fraction` of HBM (or
that failed to compile), 2 on a bad topology or program name.

Programs: sft_train_step (SFT); grpo_grad, grpo_apply, sampler_prefill, sampler_decode, engine_prefill and
engine_decode (with rollout.engine=paged), grpo_grad_shared_prefix (with algo.row_layout=shared_prefix),
reward_encoder, vision_tower (ViRL). `--num_layers N` compiles N and 2N decoder layers and extrapolates linearly to
the model's depth (the output says so): full-depth 8B compiles take minutes each on a small CPU host without the
layer scan; `--num_layers 3,6,9` fits the line through 6 and 9 and reports the measured total at 3 beside the line's
value (a linearity check). `python -m vinci_jax.aot table --out DIR` compiles the README's "Will it fit?" cells one
at a time (see `vinci_jax.aot.table`).
Model options pass through as config overrides, e.g. `--config.model.remat=full`, `--config.model.attention=...`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/sft.py or configs/virl.py, with ':preset'.")
_TOPOLOGY = flags.DEFINE_string("topology", "v5e-4", "Cloud TPU slice (v5p-64, v5e-256, v6e-64, ...) or v5e:2x2.")
_PROGRAMS = flags.DEFINE_list("programs", [], "Programs to compile (default: all of the job's).")
_HBM_FRACTION = flags.DEFINE_float("hbm_fraction", 0.9, "Budget per chip as a fraction of its HBM.")
_NUM_LAYERS = flags.DEFINE_list(
    "num_layers",
    [],
    "N: compile N and 2N decoder layers and extrapolate to the model's depth; N,M,K: those depths "
    "(the line through the two deepest, the others checked against it); empty or 0: full depth.",
)
_IMAGE_TOKENS = flags.DEFINE_integer("image_tokens", 1024, "Merged vision tokens of the one image per prompt/row.")
_REWARD_CROPS = flags.DEFINE_integer("reward_crops", 0, "Crops per reward-encoder call (0: the largest crop bucket).")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Also write the JSON report to this file.")
_DUMP_DIR = flags.DEFINE_string(
    "dump_dir",
    "",
    "Let XLA dump the compiled programs here and report what is live at each one's memory peak, by "
    "source op (from XLA's live-range dump: large, hundreds of MB for an 8B model).",
)
flags.mark_flag_as_required("config")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    if _DUMP_DIR.value:  # read when the backend starts: before JAX is imported
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={_DUMP_DIR.value}".strip()
    import jax

    jax.config.update("jax_platforms", "cpu")  # compile-only TPU devices come from libtpu; nothing executes
    from vinci_jax.aot.run import UnknownName, fit_report

    try:
        result, table = fit_report(
            _CONFIG.value,
            _TOPOLOGY.value,
            programs=_PROGRAMS.value,
            hbm_fraction=_HBM_FRACTION.value,
            num_layers=[int(n) for n in _NUM_LAYERS.value],
            image_tokens=_IMAGE_TOKENS.value,
            reward_crops=_REWARD_CROPS.value,
            progress=lambda line: print(line, flush=True),
            dump_dir=_DUMP_DIR.value,
        )
    except UnknownName as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(table)
    for line in result["over_budget_reasons"]:
        print(f"DOES NOT FIT: {line}", file=sys.stderr)
    line = json.dumps(result, default=str)
    if _JSON_OUT.value:
        Path(_JSON_OUT.value).write_text(line + "\n")
    print(line, flush=True)
    if result["over_budget"]:
        sys.exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["table"]:  # the README table's cells, each compiled by this command in a child process
        from vinci_jax.aot.table import main as table_main

        sys.exit(table_main(sys.argv[2:]))
    app.run(main)
