"""ViRL: GRPO with rendered visual rewards (`python -m vinci_jax.launch --config configs/virl.py[:preset]`).

Defaults are the released run's (shared/reference/virl.md): 256 prompts x 8 rollouts, lr 1e-6 constant, AdamW
weight decay 0.01, grad clip 1.0, temperature 1.0, top-p 1.0, prompt <= 6144 and response <= 10240 tokens, PPO clip
0.2 / 0.3 with dual clip 3.0, token-mean, no KL, checkpoint every 5 steps.

Presets:
  tiny           (default) random tiny Qwen2.5-VL on the synthetic corpus, offline reward; one CPU.
                 `--config.model.family=qwen3_vl` makes it a tiny Qwen3-VL.
  qwen2_5_vl_7b  VinciCoder-7B-style run from an SFT checkpoint or HF dir (`--config.model.init_from=...`).
  qwen3_vl_8b    the released run's shape (Qwen3-VL-8B).
The family (Qwen2.5-VL or Qwen3-VL) is `model.family`, else the config.json of `model.hf_dir` / `model.init_from` (an
HF dir, or an SFT workdir: the trainers write one there). The processor and the export follow it.
"""

from __future__ import annotations

import ml_collections

from configs import common

PRESETS = ("tiny", "qwen2_5_vl_7b", "qwen3_vl_8b")
# The pod presets train on shared-prefix rows, one group row (6,144 + 8 x 10,240 = 88,064 tokens) per chip of their
# v5p-64 slice (`algo.group_rows` = 32): compiled at full depth it needs 72.1 GiB a chip (24% headroom) for 8x the
# rollouts of a padded micro-batch (one 24,576-token row a chip, 25.1 GiB), at 0.43x its analytic FLOPs per rollout
# (README "Will it fit?"; other slices: `SLICE_OVERRIDES` in vinci_jax/aot/table.py). micro_batch_rows stays the
# padded layout's one row per chip, so `--config.algo.row_layout=padded` still fits.
POD_ROW_LAYOUT = "shared_prefix"
POD_ROWS = 32  # rows per micro-batch: one per chip of v5p-64 (fewer would be replicated on every chip)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.parse_preset(arg, PRESETS, "tiny")
    config = common.base_config("virl")
    config.preset = preset
    config.workdir = f"/tmp/vinci_jax/virl_{preset}"
    config.num_steps = 164  # one epoch over ~42k prompts at 256 per step

    config.model = ml_collections.ConfigDict(
        {
            "family": "",  # qwen2_5_vl | qwen3_vl; "" = from hf_dir's / init_from's config.json, else qwen2_5_vl
            "preset": "tiny",  # random init from this preset when init_from and hf_dir are empty
            "hf_dir": "",  # HF directory (weights + config)
            "init_from": "",  # start from an SFT checkpoint (Orbax workdir/step) or HF directory
            "dtype": "bfloat16",
            "param_dtype": "float32",
            "remat": "full",  # the released run trains with gradient checkpointing on
            "attention": common.DEFAULT_ATTENTION,  # auto | xla | splash | cudnn (see configs/common.py)
            "scan_layers": common.DEFAULT_SCAN_LAYERS,  # one scanned body per layer stack (see configs/common.py)
            "freeze_vision": False,  # the released run trains the vision tower
            "freeze_merger": False,
            "freeze": "",
        }
    )
    config.optimizer = ml_collections.ConfigDict(
        {
            "learning_rate": 1e-6,
            "schedule": "constant",
            "warmup_steps": 0,
            "min_lr_ratio": 0.0,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "weight_decay": 0.01,
            "grad_clip": 1.0,
            "mu_dtype": "",
        }
    )
    config.data = ml_collections.ConfigDict(
        {
            "path": "/tmp/vinci_jax/synth",  # ArrayRecord corpus (build-synth / convert --rl output)
            "split": "train",
            "eval_split": "test",
            "prompts_per_step": 256,
            "max_prompt_len": 6144,
            "domain_weights": "natural",  # natural | balanced | JSON {"chart": 2, ...}
            "min_pixels": 512 * 512,
            "max_pixels": 2048 * 2048,
            "data_shards": 0,  # 0: one per process; a fixed count gives every process count the same batches
        }
    )
    config.rollout = ml_collections.ConfigDict(
        {
            "n": 8,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "max_new_tokens": 10240,
            "chunk_prompts": 32,  # prompts sampled per device call; their renders overlap the next chunk
            # multi-host: owner = each process renders and scores the groups of the prompts it loaded (host-local
            # groups); spread = rollouts of every group dealt round-robin over processes. Rewards are exchanged
            # before advantages either way.
            "render_on": "owner",
            # paged = continuous batching over a paged KV cache, each rollout rendered as it finishes
            # (vinci_jax.sampling.engine); lockstep = the reference sampler (every row of a chunk in lock-step);
            # vllm = vLLM's offline engine, fed the live policy every step (needs the vLLM venv:
            # `make setup-vllm`, then .venv-vllm/bin/python -m vinci_jax.launch ...)
            "engine": "paged",
            "paged": ml_collections.ConfigDict(
                {
                    "slots": 64,  # decode slots (rows decoded at once)
                    "page_size": 16,  # tokens per KV page
                    "num_pages": 0,  # 0: as many as memory_budget_mb holds
                    "memory_budget_mb": 8192.0,
                    "steps_per_sync": 8,  # decode steps on device between two scheduling rounds
                    # prompts prefilled per call, on demand (when a prompt's first sample is about to enter a slot),
                    # straight into pages; decode bursts run between the calls
                    "prefill_prompts": 4,
                    # the policy copy that decodes (made from the training state once per step): auto = bfloat16
                    # on TPU / GPU, float32 on CPU (no native bf16 matmul there; exact against the lockstep sampler)
                    "decode_dtype": "auto",
                }
            ),
            "vllm_memory_utilization": 0.15,  # vLLM's gpu_memory_utilization (its KV cache share of the memory)
            # vLLM's KV cache size in MiB; 0: from vllm_memory_utilization. On CPU vLLM counts this process's own
            # memory (JAX, the policy) against that share, so a CPU run names the size.
            "vllm_kv_cache_mb": 0,
        }
    )
    config.algo = ml_collections.ConfigDict(
        {
            "advantage": "grpo",  # grpo | dr_grpo | rloo
            "policy_loss": "ppo_clip",  # ppo_clip | reinforce
            "clip_low": 0.2,
            "clip_high": 0.3,
            "dual_clip": 3.0,
            "loss_agg": "token-mean",  # token-mean | seq-mean-token-mean | seq-mean-token-sum
            "kl_coef": 0.0,  # > 0 adds a KL penalty to a frozen copy of the initial policy
            "kl_estimator": "k3",
            "filter_equal_groups": False,  # drop groups whose rewards are all equal (zero advantage)
            "old_logprobs": "detached",  # detached (one on-policy update) | rollout (sampler's) | recomputed
            # shared_prefix: one group per row, its prompt (and image) once, then its n responses in fixed slots
            # (each sees the prompt and itself); packed: rollouts first-fit into rows of row_length tokens (0 =
            # widest prompt bucket + max_new_tokens), told apart by segment ids; padded: one rollout per row (needed
            # by the seq-mean loss aggregations). shared_prefix by measurement (`python -m vinci_jax.bench
            # grpo_update`, steady state on the CPU demo's shapes: 2.3x padded's and 1.3x packed's response tokens
            # per CPU second); at the released lengths it drops a third of the tokens and 7 of 8 image encodes
            "row_layout": "shared_prefix",
            "row_length": 0,
            # rows per gradient micro-batch (packed rows each hold one or more rollouts; shared_prefix: rollouts, so
            # micro_batch_rows / n rows of one group each, unless group_rows is set)
            "micro_batch_rows": 16,
            # shared_prefix: group rows per micro-batch (0 = micro_batch_rows / n); a pod sets one per chip, because
            # rows that do not divide the batch axes are replicated on every chip
            "group_rows": 0,
            # response tokens per LM-head chunk in the loss (0: all at once); bounds the [rows, chunk, vocab] logits
            # held at a time (16 x 10,240 x 152k floats = 100 GB unchunked)
            "logit_chunk": 1024,
            "log_ratio_clamp": 20.0,  # |log pi - log pi_old| is clamped to this before exp (finite ratios)
            # truncated importance sampling: tokens weighted by min(pi_old / pi_sampler, cap); 0 = off. Corrects
            # for sampler vs trainer numerics; needs old_logprobs detached or recomputed.
            "tis_cap": 0.0,
        }
    )
    config.reward = ml_collections.ConfigDict(
        {
            "encoder": "dinov2",  # dinov2 (needs encoder_path) | offline-msssim-hist (weight-free)
            "encoder_path": "",
            "feature": "cls_pre_ln",
            "compute_dtype": "float32",
            "max_tiles": 12,
            "format_weight": 0.1,
            "visual_weight": 0.9,
        }
    )
    # 0 workers: CPU count. max_infra_fraction: renderer (not model) failures a step may have before the run stops
    config.render = ml_collections.ConfigDict({"num_workers": 0, "timeout_s": 10.0, "max_infra_fraction": 0.05})
    config.checkpoint = ml_collections.ConfigDict({"every_steps": 5, "keep": 3, "async_save": True})
    config.eval = ml_collections.ConfigDict({"prompts": 64, "at_start": True, "every_steps": 0, "max_new_tokens": 0})
    config.log_every = 1
    config.panel_every = 5  # TensorBoard image panel (target beside rendered rollouts) every N steps; 0 disables
    config.export_dir = ""  # write the final policy as an HF directory here
    config.progress = True

    if preset == "tiny":
        config.num_steps = 4
        config.model.dtype = "float32"  # bf16 is emulated (slow) on CPU
        config.model.remat = "none"
        config.optimizer.learning_rate = 1e-4
        config.data.prompts_per_step = 4
        config.data.max_prompt_len = 1024
        config.data.min_pixels = 56 * 56
        config.data.max_pixels = 112 * 112
        config.rollout.n = 4
        config.rollout.max_new_tokens = 48
        config.rollout.chunk_prompts = 2
        config.rollout.paged.slots = 4
        config.rollout.paged.memory_budget_mb = 64.0
        config.rollout.vllm_kv_cache_mb = 64
        config.algo.micro_batch_rows = 8
        config.reward.encoder = "offline-msssim-hist"
        config.render.num_workers = 2
        config.render.timeout_s = 10.0
        config.checkpoint.every_steps = 2
        config.eval.prompts = 4
        config.eval.at_start = False
        config.panel_every = 2
    elif preset == "qwen2_5_vl_7b":
        config.model.preset = "qwen2_5_vl_7b"
        config.model.attention = common.POD_ATTENTION
        config.model.scan_layers = common.POD_SCAN_LAYERS
        config.mesh = common.mesh_config(data=1, fsdp=-1, tensor=1)
        config.algo.micro_batch_rows = POD_ROWS  # one row per chip on v5p-64, as the 8B (16 would be replicated there)
        config.algo.group_rows = POD_ROWS
        config.algo.row_layout = POD_ROW_LAYOUT
    elif preset == "qwen3_vl_8b":
        config.model.family = "qwen3_vl"
        config.model.preset = "qwen3_vl_8b"
        config.model.attention = common.POD_ATTENTION
        config.model.scan_layers = common.POD_SCAN_LAYERS
        config.mesh = common.mesh_config(data=1, fsdp=-1, tensor=1)
        # its slice is v5p-64 (32 chips): 32 rollouts a micro-batch put one row on every chip; 16 rows would not
        # divide the batch axes and the whole micro-batch would be replicated on every chip (vinci_jax.aot)
        config.algo.micro_batch_rows = POD_ROWS
        config.algo.group_rows = POD_ROWS
        config.algo.row_layout = POD_ROW_LAYOUT
    return config
