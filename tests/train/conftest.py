"""A small SFT record corpus (chart images + matplotlib answers) written with the real record writer, for the
trainer tests that run the real Grain pipeline and the tiny Qwen2.5-VL."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vinci_data.records import Record, RecordWriter


def _png(rng: np.random.Generator, width: int, height: int) -> bytes:
    small = rng.integers(0, 255, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.NEAREST).save(out, format="PNG")
    return out.getvalue()


def write_corpus(directory: Path, n: int = 48, seed: int = 0) -> Path:
    """`n` records, every tenth in the `val` split, the rest `train`."""
    rng = np.random.default_rng(seed)
    with RecordWriter(directory, num_shards=2) as writer:
        for i in range(n):
            body = "\n".join(f"plt.plot([{j}, {i}], color='C{j % 9}')" for j in range(int(rng.integers(1, 5))))
            prompt = "<image>\nWrite Python matplotlib code that draws this chart."
            writer.write(
                Record(
                    id=f"train-test-{i}",
                    domain="chart",
                    task="generate",
                    language="python",
                    split="val" if i % 10 == 0 else "train",
                    images=[_png(rng, int(rng.integers(56, 140)), int(rng.integers(56, 140)))],
                    messages=[
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": f"```python\nimport matplotlib.pyplot as plt\n{body}\n```"},
                    ],
                    problem=prompt,
                    answer=body,
                )
            )
    return directory


@pytest.fixture(scope="session")
def sft_corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("sft_corpus"))
