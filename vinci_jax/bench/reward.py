"""Reward benchmark: JAX DINOv2 vs transformers' PyTorch Dinov2Model on the same CPU, and rewards/s end to end.

1. Encoder: the same config and the same random weights (a transformers Dinov2Model is saved and loaded into the
   NNX model through the HF mapping), a batch of 448x448 crops; images/s for both, `speedup` = JAX / PyTorch.
2. End to end: rollouts in prompt groups with pre-made renders (synthetic pictures), scored by `VisualReward`
   (host tiling + device encoder) vs a PyTorch loop with the released semantics (target re-encoded per rollout).
Random weights are for timing only. The JSON object is the last line of the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from typing import Any

import numpy as np

PRESETS = {
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vinci_jax.bench reward", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="large", choices=sorted(PRESETS), help="DINOv2 shapes (default: large)")
    p.add_argument("--layers", type=int, default=None, help="override the number of layers (quick runs)")
    p.add_argument("--batch", type=int, default=4, help="crops per encoder batch")
    p.add_argument("--size", type=int, default=448, help="crop side")
    p.add_argument("--iters", type=int, default=2, help="timed iterations after one warm-up")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="JAX compute dtype")
    p.add_argument("--rollouts", type=int, default=8, help="end to end: rollouts (0 skips the end-to-end part)")
    p.add_argument("--group-size", type=int, default=4, help="end to end: rollouts per prompt group")
    p.add_argument("--target-size", default="512x512", help="end to end: target WxH (512x512 -> 1 crop)")
    p.add_argument("--no-torch-e2e", action="store_true", help="skip the PyTorch end-to-end reference loop")
    return p


def _interleaved(first, second, iters: int) -> tuple[float, float]:
    """Median seconds per call of two functions timed in alternation (after one warm-up call each).

    Alternating rounds keep a shared, noisy machine from favouring whichever framework ran during a quiet spell.
    """
    first(), second()
    a, b = [], []
    for _ in range(iters):
        start = time.perf_counter()
        first()
        a.append(time.perf_counter() - start)
        start = time.perf_counter()
        second()
        b.append(time.perf_counter() - start)
    return float(np.median(a)), float(np.median(b))


def _pictures(n: int, width: int, height: int, seed: int):
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            box = [x, y, x + int(rng.integers(10, width // 2)), y + int(rng.integers(10, height // 2))]
            draw.rectangle(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        out.append(image)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from transformers import Dinov2Config as HFConfig
    from transformers import Dinov2Model as HFModel

    from vinci_jax.hf.dinov2 import load_dinov2

    shapes = dict(PRESETS[args.config])
    if args.layers:
        shapes["num_hidden_layers"] = args.layers
    torch.manual_seed(0)
    torch_model = HFModel(HFConfig(image_size=518, patch_size=14, **shapes)).eval()
    workdir = tempfile.mkdtemp(prefix="bench_reward_")
    torch_model.save_pretrained(workdir)
    dtype = jnp.dtype(args.dtype)
    jax_model = load_dinov2(workdir, dtype=dtype, param_dtype=dtype)
    graphdef, params = nnx.split(jax_model)

    @jax.jit
    def jax_forward(params, pixels):
        return nnx.merge(graphdef, params).cls_features(pixels)

    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
    pixels_jax = jnp.asarray(pixels)
    pixels_torch = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
    run_jax = lambda: jax.block_until_ready(jax_forward(params, pixels_jax))  # noqa: E731
    with torch.no_grad():
        run_torch = lambda: torch_model(pixel_values=pixels_torch, output_hidden_states=True)  # noqa: E731
        jax_s, torch_s = _interleaved(run_jax, run_torch, args.iters)
        reference = torch_model(pixel_values=pixels_torch, output_hidden_states=True).hidden_states[-1][:, 0].numpy()
    max_diff = float(np.abs(np.asarray(jax_forward(params, pixels_jax), np.float32) - reference).max())
    result: dict[str, Any] = {
        "benchmark": "reward",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, jax {jax.__version__} {jax.default_backend()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "encoder_config": {**shapes, "patch_size": 14, "weights": "random (timing only)"},
        "batch": args.batch,
        "crop": args.size,
        "jax_dtype": args.dtype,
        "jax_images_per_s": args.batch / jax_s,
        "torch_images_per_s": args.batch / torch_s,
        "speedup": torch_s / jax_s,
        "max_abs_diff_cls": max_diff,
    }
    print(f"encoder: jax {args.batch / jax_s:.3f} img/s, torch {args.batch / torch_s:.3f} img/s", flush=True)
    if args.rollouts:
        result["end_to_end"] = _end_to_end(args, workdir, torch_model)
    return result


def _end_to_end(args, workdir: str, torch_model) -> dict[str, Any]:
    import torch

    from vinci_jax.reward import RewardConfig, VisualReward
    from vinci_jax.reward.encoders import Dinov2Encoder
    from vinci_jax.reward.tiling import match_size, normalize, tile_image

    width, height = (int(v) for v in args.target_size.lower().split("x"))
    groups = max(1, args.rollouts // args.group_size)
    n = groups * args.group_size
    targets = _pictures(groups, width, height, seed=1)
    renders = _pictures(n, width, height, seed=2)
    prompts = ["Write python matplotlib code for this chart."] * n
    responses = ["```python\nimport matplotlib\n```"] * n
    target_images = [targets[i // args.group_size] for i in range(n)]
    group_ids = [i // args.group_size for i in range(n)]
    buckets = tuple(2**i for i in range(int(np.log2(4 * args.batch)) + 1))  # powers of two: little padding
    config = RewardConfig(encoder_path=workdir, compute_dtype=args.dtype, crop_buckets=buckets)
    reward = VisualReward(config, encoder=Dinov2Encoder.from_pretrained(workdir, compute_dtype=args.dtype))
    run = lambda: reward.score(prompts, responses, target_images, renders, group_ids)  # noqa: E731
    batch = run()  # warm-up: compiles every bucket it uses
    start = time.perf_counter()
    batch = run()
    jax_s = time.perf_counter() - start
    out: dict[str, Any] = {
        "rollouts": n,
        "group_size": args.group_size,
        "target_size": [width, height],
        "crops_per_image": int(tile_image(targets[0]).count),
        "jax_rewards_per_s": n / jax_s,
        "encoder_calls": batch.stats["encoder_calls"],
        "crops_encoded": batch.stats["target_crops_encoded"] + batch.stats["render_crops_encoded"],
        "padded_crops": batch.stats["padded_crops"],
        "reference_crops": batch.stats["reference_crops"],
        "target_crops_saved": batch.stats["target_crops_saved"],
        "encoder_work_saved": batch.stats["encoder_work_saved"],
    }
    if not args.no_torch_e2e:

        def features(image):
            crops = torch.from_numpy(normalize(tile_image(image).crops).transpose(0, 3, 1, 2).copy())
            return torch_model(pixel_values=crops, output_hidden_states=True).hidden_states[-1][:, 0]

        def reference():
            totals = []
            with torch.no_grad():
                for target, render in zip(target_images, renders, strict=True):
                    ft, fr = features(target), features(match_size(render, target.size))
                    visual = ((1 + torch.nn.functional.cosine_similarity(ft, fr, dim=-1)) / 2).mean().item()
                    totals.append(0.9 * visual + 0.1)
            return np.asarray(totals)

        start = time.perf_counter()
        expected = reference()
        torch_s = time.perf_counter() - start
        out["torch_reference_rewards_per_s"] = n / torch_s
        out["speedup_end_to_end"] = torch_s / jax_s
        out["max_abs_diff_reward"] = float(np.abs(expected - batch.total).max())
    print(f"end to end: jax {out['jax_rewards_per_s']:.3f} rewards/s", flush=True)
    return out
