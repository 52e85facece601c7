"""Host-side processing throughput: `python -m vinci_jax.processing.bench` (last stdout line is JSON).

Measures what the data loader pays per SFT sample (one image + a code answer) so we can tell whether the input
pipeline keeps up with the accelerator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from vinci_jax.processing.image_processor import ImageProcessor
from vinci_jax.processing.processor import QwenProcessor
from vinci_jax.processing.tokenizer import load_tokenizer

ANSWER = "```python\nimport matplotlib.pyplot as plt\n" + "plt.plot([1, 2, 3], [4, 5, 6], color='red')\n" * 40 + "```"


def per_call_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    start = time.perf_counter()
    tokenizer = load_tokenizer(None)
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    large = Image.fromarray(rng.integers(0, 256, (1400, 1800, 3), dtype=np.uint8))
    images = ImageProcessor()
    processor = QwenProcessor(tokenizer, images)
    messages = [{"role": "user", "content": "<image>Write matplotlib code that draws this chart."}]
    sample = [*messages, {"role": "assistant", "content": ANSWER}]
    result = {
        "machine": "host CPU",
        "tokenizer_first_load_s": round(load_s, 3),
        "image_512x512_ms": round(per_call_ms(lambda: images([small]), 20), 2),
        "image_1400x1800_ms": round(per_call_ms(lambda: images([large]), 5), 2),
        "sft_sample_512_ms": round(per_call_ms(lambda: processor(sample, [small]), 20), 2),
        "sft_sample_1400x1800_ms": round(per_call_ms(lambda: processor(sample, [large]), 5), 2),
        "sft_sample_tokens": int(processor(sample, [small])["input_ids"].size),
    }
    result["sft_samples_per_s_512"] = round(1e3 / result["sft_sample_512_ms"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
