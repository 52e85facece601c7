"""SFT of a Qwen2.5-VL or Qwen3-VL model (`python -m vinci_jax.launch --config configs/sft.py[:preset]`).

Presets:
  tiny           (default) random tiny Qwen2.5-VL on the synthetic corpus (`python -m vinci_jax.data build-synth
                 --out /tmp/vinci_jax/synth --size 200`); 20 steps on a CPU. Its LM head keeps the real 151,936-token
                 vocabulary, which dominates the cost of a step.
  standin        the trainer's own tiny text-only stand-in model and in-memory data (no model/pipeline needed).
  qwen2_5_vl_3b  Qwen2.5-VL-3B (random init, or weights from `--config.model.hf_dir=...`), FSDP over a pod slice.
  qwen2_5_vl_7b  Qwen2.5-VL-7B likewise (VinciCoder-7B's base).
  qwen3_vl_8b    Qwen3-VL-8B likewise.
  qwen2_5_vl_32b Qwen2.5-VL-32B likewise (the README's "Will it fit?" table compiles it).
Qwen3-VL: `--config.model.family=qwen3_vl` (any preset: tiny, 2b, 4b, 8b, 32b) or an HF dir whose config.json says
`model_type: qwen3_vl` (`--config.model.hf_dir=...`); the family's processor (patch 16, its chat template) follows.
An existing `workdir` resumes from its latest checkpoint; the workdir also gets the model's config.json and processor
files, so `python -m vinci_jax.hf export WORKDIR OUT` writes a complete HF dir.
"""

from __future__ import annotations

import ml_collections

from configs import common

PRESETS = ("tiny", "standin", "qwen2_5_vl_3b", "qwen2_5_vl_7b", "qwen3_vl_8b", "qwen2_5_vl_32b")


def _model() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "family": "",  # qwen2_5_vl | qwen3_vl; "" = from hf_dir's config.json, else qwen2_5_vl
            "preset": "tiny",  # the family's size preset for random init (tiny, 7b, qwen3_vl_8b, ...), or "standin"
            "hf_dir": "",  # load weights (and config) from this HF directory instead of random init
            "dtype": "bfloat16",  # compute dtype
            "param_dtype": "float32",  # master weights (optimizer state follows them unless optimizer.mu_dtype)
            "remat": "none",  # none | full | dots | dots_no_batch (per decoder layer and vision block)
            "attention": common.DEFAULT_ATTENTION,  # auto | xla | splash | cudnn (see configs/common.py)
            "scan_layers": common.DEFAULT_SCAN_LAYERS,  # one scanned body per layer stack (see configs/common.py)
            "freeze_vision": False,  # vision tower without the merger
            "freeze_merger": False,
            "freeze": "",  # extra comma-separated regexes over parameter paths ("model/layers/0/.*")
        }
    )


def _optimizer() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "learning_rate": 1e-5,
            "schedule": "cosine",  # cosine | constant (both after linear warmup)
            "warmup_steps": 100,
            "min_lr_ratio": 0.0,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "grad_clip": 1.0,  # global norm; 0 disables
            "mu_dtype": "",  # e.g. "bfloat16" to halve the first moment's memory
        }
    )


def _data() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "source": "grain",  # grain (vinci_jax.input_pipeline) | synthetic (trainer stand-in)
            "train_path": "/tmp/vinci_jax/synth",  # ArrayRecord corpus dir (build-synth / convert output)
            "train_split": "train",
            "val_path": "",  # "" -> train_path
            "val_split": "val",  # "" disables validation data; a missing split is skipped with a warning
            "global_batch_size": 8,  # rows per micro-batch over all processes
            "seq_len": 128,
            "packing": True,
            "overlong": "drop",  # samples longer than seq_len: drop | truncate (never cuts into an image)
            "patches_per_row": 0,  # 0: 2 * seq_len (images up to half a row's tokens; 4 * seq_len is the hard bound)
            "images_per_row": 8,
            "min_pixels": 56 * 56,
            "max_pixels": 28 * 28 * 1280,
            "vocab_size": 64,  # synthetic source only
            "num_workers": 0,
            "data_shards": 0,  # 0: one per process; a fixed count gives every process count the same batches
        }
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.parse_preset(arg, PRESETS, "tiny")
    config = common.base_config("sft")
    config.preset = preset
    config.workdir = f"/tmp/vinci_jax/sft_{preset}"
    config.model = _model()
    config.model.preset = preset
    if preset.startswith("qwen3_vl"):
        config.model.family = "qwen3_vl"
    config.optimizer = _optimizer()
    config.data = _data()
    config.grad_accum_steps = 1
    # tokens per LM-head chunk of the loss (0: the whole row's logits at once). Each chunk's logits are recomputed in
    # the backward pass instead of kept (vinci_jax.train.lm_head): one 8,192-token row's float32 logits are 4.6 GiB.
    config.logit_chunk = 0
    config.log_every = 1
    config.eval_every = 0  # 0 disables periodic validation
    config.eval_steps = 2
    config.progress = True
    config.checkpoint = ml_collections.ConfigDict(
        {"every_steps": 100, "keep": 3, "async_save": True, "save_on_preemption": True}
    )

    if preset == "tiny":
        # The tiny Qwen2.5-VL keeps the real 151,936-token vocabulary (real special-token ids), so the LM head
        # dominates the cost: small rows keep a few dozen steps on a CPU short.
        config.num_steps = 20
        config.model.dtype = "float32"  # bf16 matmuls are emulated (slow) on CPU
        config.optimizer.learning_rate = 3e-3
        config.optimizer.warmup_steps = 5
        config.data.global_batch_size = 2
        config.data.seq_len = 256
        config.data.overlong = "truncate"  # synthetic samples run 150-1400 tokens; keep their beginnings
        config.data.patches_per_row = 256
        config.data.max_pixels = 160 * 160  # small images keep the tiny vision tower cheap on a CPU
        config.checkpoint.every_steps = 10
        config.eval_every = 10
        config.eval_steps = 1
    elif preset == "standin":
        config.num_steps = 40
        config.model.dtype = "float32"
        config.optimizer.learning_rate = 3e-3
        config.optimizer.warmup_steps = 5
        config.data.source = "synthetic"
        config.data.global_batch_size = 8
        config.data.seq_len = 64
        config.checkpoint.every_steps = 10
        config.eval_every = 20
    else:
        config.num_steps = 5000
        config.log_every = 10  # fetching metrics syncs host and device; not every step on a pod
        config.mesh = common.mesh_config(data=1, fsdp=-1, tensor=1)
        config.model.remat = "dots_no_batch"
        config.model.scan_layers = common.POD_SCAN_LAYERS
        if preset in ("qwen2_5_vl_7b", "qwen3_vl_8b", "qwen2_5_vl_32b"):
            config.model.attention = common.POD_ATTENTION
        config.optimizer.learning_rate = 1e-5
        config.optimizer.warmup_steps = 100
        config.data.seq_len = 8192
        config.logit_chunk = 1024  # 0.6 GiB of float32 logits a row at a time instead of 4.6 GiB
        # 128 rows of 8,192 tokens a step as 4 micro-batches of 32: one row per chip on v5p-64 (32 chips). At 4 rows
        # per chip dots_no_batch would keep every matmul output of every layer: 8B, 32,768 tokens x 38,912 outputs
        # x 2 bytes = 2.4 GiB a layer, 86 GiB over 36 layers, past the chip alone (vinci_jax.aot arithmetic, not yet
        # compiled); at one row a chip it is 21.5 GiB. 32B keeps 1.1 GiB a layer even at one row (71 GiB over 64):
        # it recomputes everything instead (remat full: its saved layer inputs are 5 GiB).
        config.data.global_batch_size = 32
        config.grad_accum_steps = 4
        if preset == "qwen2_5_vl_32b":
            config.model.remat = "full"
        config.checkpoint.every_steps = 500
        config.eval_every = 500
        config.eval_steps = 20
    return config
