"""Training throughput benchmark: `python -m vinci_jax.bench train [--preset tiny] [--steps N] [--data DIR]`.

Runs the SFT trainer's jitted step on batches from the real Grain SFT pipeline and reports steady-state tokens/s
(compilation and the first steps excluded) as a JSON object on the last line. Without `--data` it writes a small
throwaway corpus of chart-like images with matplotlib answers (the numbers measure the trainer, not the data).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def write_bench_corpus(directory: Path, n: int = 64, seed: int = 0) -> Path:
    """A small record corpus (random block images, short matplotlib answers) in the pipeline's record format."""
    from PIL import Image
    from vinci_data.records import Record, RecordWriter

    rng = np.random.default_rng(seed)
    with RecordWriter(directory, num_shards=1) as writer:
        for i in range(n):
            w, h = (int(v) for v in rng.integers(56, 160, size=2))
            small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
            png = io.BytesIO()
            Image.fromarray(small).resize((w, h), Image.NEAREST).save(png, format="PNG")
            body = "\n".join(f"plt.bar([{j}], [{i % 7 + j}], color='C{j}')" for j in range(int(rng.integers(1, 6))))
            prompt = "<image>\nWrite Python matplotlib code that draws this chart."
            writer.write(
                Record(
                    id=f"bench-{i}",
                    domain="chart",
                    task="generate",
                    language="python",
                    split="train",
                    images=[png.getvalue()],
                    messages=[
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": f"```python\nimport matplotlib.pyplot as plt\n{body}\n```"},
                    ],
                    problem=prompt,
                    answer=body,
                )
            )
    return directory


def run_benchmark(preset: str, steps: int, warmup: int, data: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    import jax

    from configs import sft as sft_config
    from vinci_jax.train import data as data_lib
    from vinci_jax.train import metrics as metrics_lib
    from vinci_jax.train.sft import SFTTrainer, make_data_iterators

    config = sft_config.get_config(preset)
    with tempfile.TemporaryDirectory() as tmp:
        config.workdir = str(Path(tmp) / "workdir")
        if config.data.source == "grain":
            config.data.train_path = data or str(write_bench_corpus(Path(tmp) / "corpus"))
        for key, value in overrides.items():
            node = config
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = type(node[leaf])(value)
        start = time.perf_counter()
        trainer = SFTTrainer(config)
        state = trainer.init_state()
        train_iter, _ = make_data_iterators(config, config.seed, trainer.factory.abstract)
        assembler = data_lib.BatchAssembler(train_iter, trainer.mesh, accum_steps=trainer.accum)
        batches = [next(assembler) for _ in range(warmup + steps)]  # data time is not the trainer's
        for batch in batches[:warmup]:
            state, metrics = trainer.train_step(state, batch)
        jax.block_until_ready(metrics)
        setup_s = time.perf_counter() - start
        tokens = label_tokens = real_tokens = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        for batch in batches[warmup:]:
            state, metrics = trainer.train_step(state, batch)
            tokens += int(np.prod(batch["input_ids"].shape))
            real_tokens += int(jax.device_get((batch["segment_ids"] > 0).sum()))
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - start
        cpu_s = time.process_time() - cpu_start
        label_tokens = float(jax.device_get(metrics["loss_tokens"]))
    tokens_per_s = tokens / elapsed
    peak = metrics_lib.device_peak_flops()
    return {
        "bench": "train",
        "preset": preset,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "params": trainer.num_params,
        "global_batch_size": config.data.global_batch_size * config.grad_accum_steps,
        "seq_len": config.data.seq_len,
        "steps": steps,
        "step_s": elapsed / steps,
        "cpu_s_per_step": cpu_s / steps,  # process CPU time (all threads): comparable on a shared machine
        "setup_and_compile_s": setup_s,
        "tokens_per_s": tokens_per_s,
        "real_tokens_per_s": real_tokens / elapsed,
        "last_step_label_tokens": label_tokens,
        "mfu": metrics_lib.mfu(tokens_per_s, trainer.flops_per_token, jax.device_count(), peak),
    }


def main(argv: list[str] | None = None) -> None:
    """Prints a human line, then the JSON result as the last line (returns None: nothing for a dispatcher to print)."""
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench train", description=__doc__)
    parser.add_argument("--preset", default="tiny", help="configs/sft.py preset (tiny, standin, ...)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--data", default=None, help="SFT record directory (default: a throwaway corpus)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. data.seq_len=256"
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    result = run_benchmark(args.preset, args.steps, args.warmup, args.data, overrides)
    print(
        f"train {result['preset']}: {result['tokens_per_s']:.1f} tokens/s "
        f"({result['step_s'] * 1000:.0f} ms/step, {result['devices']} {result['backend']} device(s))"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
