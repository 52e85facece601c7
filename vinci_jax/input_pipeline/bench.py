"""SFT / RL pipeline throughput: `python -m vinci_jax.input_pipeline.bench --data DIR [...]`; last line is JSON.

Measures host-side samples/s through decode -> processor -> labels -> packing -> batch (no device work), the number
that must stay above the trainer's consumption rate.
"""

from __future__ import annotations

import argparse
import json
import time

from vinci_jax.input_pipeline.sft import SFTConfig, SFTLoader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--max-pixels", type=int, default=512 * 512)
    parser.add_argument("--no-packing", action="store_true")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    config = SFTConfig(
        data_dir=args.data,
        split=args.split,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        packing=not args.no_packing,
        max_pixels=args.max_pixels,
        num_epochs=None,
        worker_count=args.workers,
    )
    start = time.perf_counter()
    loader = SFTLoader(config)
    next(loader)  # tokenizer load, first pack
    setup = time.perf_counter() - start
    start = time.perf_counter()
    tokens = real = segments = 0
    for _ in range(args.batches):
        batch = next(loader)
        tokens += batch["input_ids"].size
        real += int((batch["segment_ids"] > 0).sum())
        segments += sum(len(set(row.tolist()) - {0}) for row in batch["segment_ids"])
    seconds = time.perf_counter() - start
    result = {
        "benchmark": "sft_pipeline",
        "packing": config.packing,
        "seq_len": config.seq_len,
        "batch_size": config.batch_size,
        "max_pixels": config.max_pixels,
        "workers": config.worker_count,
        "batches": args.batches,
        "samples_per_s": round(segments / seconds, 2),
        "batches_per_s": round(args.batches / seconds, 3),
        "tokens_per_s": round(real / seconds, 1),
        "fill": round(real / tokens, 3),
        "setup_s": round(setup, 2),
    }
    if args.workers == 0:
        result["counts"] = loader.counts
    print(json.dumps(result))


if __name__ == "__main__":
    main()
