"""Fixtures for the data tests: small record datasets with real PNG images (no renderers needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from vinci_data.records import Record, RecordWriter


def png_bytes(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A PNG of random blocks (compressible, decodable, distinct per draw)."""
    small = rng.integers(0, 255, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def sample_records(n: int, seed: int = 0) -> list[Record]:
    """SFT records of varying prompt/answer lengths and image sizes, a few with two images."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        n_images = 2 if i % 5 == 4 else 1
        images = [png_bytes(rng, int(rng.integers(56, 160)), int(rng.integers(56, 160))) for _ in range(n_images)]
        body = "\n".join(f"plt.plot([{j}, {i}], color='C{j % 9}')" for j in range(int(rng.integers(1, 6))))
        prompt = "<image>\n" * n_images + f"Write Python matplotlib code for chart {i}."
        records.append(
            Record(
                id=f"rec-{i}",
                domain="chart",
                task="generate",
                language="python",
                images=images,
                messages=[
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"```python\nimport matplotlib.pyplot as plt\n{body}\n```"},
                ],
                problem=prompt,
                answer=body,
            )
        )
    return records


@pytest.fixture
def record_dir(tmp_path):
    def make(n: int = 12, seed: int = 0, split: str = "train", num_shards: int = 2) -> str:
        out = tmp_path / f"records_{seed}_{n}"
        with RecordWriter(out, num_shards=num_shards) as writer:
            for record in sample_records(n, seed):
                record.split = split
                writer.write(record)
        return str(out)

    return make


@pytest.fixture
def make_records():
    """`sample_records(n, seed)` as a fixture (test modules cannot import conftest in importlib mode)."""
    return sample_records
