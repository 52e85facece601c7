"""Training metrics sinks (console, TensorBoard, WORKDIR/metrics.jsonl) and throughput / MFU estimates.

Only process 0 writes anything. `metrics.jsonl` holds one JSON object per logged step (at least `step` and `loss`);
on resume, records past the restored step are dropped first so the file reads as one consistent run.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax
from etils import epath

from vinci_jax.paths import as_path, is_remote, join

# Dense bf16 peak FLOP/s per device, by substrings of `device.device_kind` (first match wins).
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("v6", 918e12),
    ("v5p", 459e12),
    ("v5 lite", 197e12),
    ("v5e", 197e12),
    ("v4", 275e12),
    ("v3", 123e12),
    ("h200", 989e12),
    ("h100", 989e12),
    ("a100", 312e12),
)


def device_peak_flops(device: Any | None = None) -> float | None:
    """Peak bf16 FLOP/s of one device, or None when unknown (e.g. CPU): MFU is then reported as null."""
    device = device or jax.devices()[0]
    kind = str(getattr(device, "device_kind", "")).lower()
    for key, flops in PEAK_FLOPS:
        if key in kind:
            return flops
    return None


def train_flops_per_token(num_params: int, num_embedding_params: int = 0) -> float:
    """6 N per trained token (forward 2N + backward 4N) over the parameters used in matmuls.

    Embedding lookups are not matmuls, so their table is excluded; attention score FLOPs are ignored (small at the
    sequence lengths of SFT relative to 6 N for billion-parameter models).
    """
    return 6.0 * max(num_params - num_embedding_params, 0)


def mfu(tokens_per_second: float, flops_per_token: float, num_devices: int, peak: float | None) -> float | None:
    if peak is None or not math.isfinite(tokens_per_second):
        return None
    return tokens_per_second * flops_per_token / (num_devices * peak)


class MetricsWriter:
    """Console progress bar, TensorBoard events and JSON lines; no-ops on processes other than 0."""

    def __init__(self, workdir: epath.PathLike, *, total_steps: int, start_step: int = 0, progress: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = as_path(workdir) / "metrics.jsonl"
        self._lines: list[str] = []  # the whole file, for object stores (no appends there)
        self._tb = None
        self._bar = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(join(workdir, "tensorboard"))  # tensorboardX writes gs:// itself
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True, mininterval=1.0)

    def _truncate_after(self, step: int) -> None:
        """Drop records of steps beyond `step` (written before a crash, then replayed after resume)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if int(json.loads(line)["step"]) <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        self._lines = kept
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step)}
        for key, value in values.items():
            record[key] = None if value is None else float(value)
        line = json.dumps(record)
        if is_remote(self.path):  # objects are replaced whole: rewrite the (small) file
            self._lines.append(line)
            self.path.write_text("".join(x + "\n" for x in self._lines))
        else:
            with self.path.open("a") as f:
                f.write(line + "\n")
        for key, value in record.items():
            if key != "step" and value is not None:
                self._tb.add_scalar(key, value, step)
        if self._bar is not None:
            self._bar.n = step
            shown = {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_loss", "tokens_per_s") and v}
            self._bar.set_postfix(shown, refresh=True)

    def write_image(self, step: int, tag: str, image: Any) -> None:
        """A PIL image (e.g. a ViRL panel) as a TensorBoard image at `step`."""
        if not self.enabled:
            return
        import numpy as np

        self._tb.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.n = step
            self._bar.refresh()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._bar is not None:
            self._bar.close()
