"""ViRL panels: each prompt's target beside its rollouts' renders, as a PNG and as a TensorBoard image."""

import dataclasses
import glob
import io
import struct

import numpy as np
from PIL import Image
from tensorboardX.proto import event_pb2

from renderers import RenderResult
from vinci_jax.rl.panels import THUMB, write_panel
from vinci_jax.train.metrics import MetricsWriter


def _png(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, format="PNG")
    return out.getvalue()


@dataclasses.dataclass
class Batch:
    domains: list

    def target_images(self):
        return [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (32, 32), "blue")]


@dataclasses.dataclass
class Rollouts:
    prompt_of_row: np.ndarray
    render_results: list
    rewards: np.ndarray
    statuses: list


def _images(logdir):
    values = []
    for path in glob.glob(f"{logdir}/events.out.tfevents.*"):
        data, offset = open(path, "rb").read(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            values += list(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]).summary.value)
            offset += 12 + length + 4
    return {v.tag: v.image for v in values if v.HasField("image")}


def test_panel_goes_to_a_png_and_tensorboard(tmp_path):
    ok = RenderResult(status="ok", png=_png("red"), error="", seconds=0.1)
    failed = RenderResult(status="timeout", png=None, error="deadline", seconds=10.0)
    statuses = ["ok", "timeout", "no_code", "ok", "ok", "no_code"]
    rewards = np.asarray([0.9, 0.1, 0.0, 0.5, 0.4, 0.0])
    rollouts = Rollouts(np.asarray([0, 0, 0, 1, 1, 1]), [ok, failed, None, ok, ok, None], rewards, statuses)
    writer = MetricsWriter(tmp_path, total_steps=10, progress=False)
    path = write_panel(tmp_path / "panels" / "step_000005.png", Batch(["svg", "chart"]), rollouts, writer, step=5)
    writer.close()
    sheet = Image.open(path)
    assert sheet.size == (4 * THUMB, 2 * (THUMB + 18))  # target + 3 rollouts per row, 2 prompts
    # the first rollout's render (red) sits in column 1; the failed one in column 2 is a framed blank tile
    assert sheet.getpixel((THUMB + THUMB // 2, THUMB // 2)) == (255, 0, 0)
    assert sheet.getpixel((2 * THUMB + THUMB // 2, THUMB // 2)) == (255, 255, 255)
    image = _images(tmp_path / "tensorboard")["panels"]
    assert (image.width, image.height) == sheet.size
    assert Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB").tobytes() == sheet.convert("RGB").tobytes()
