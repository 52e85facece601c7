"""Report writers: the Markdown table and the TensorBoard scalars / panels a training loop logs."""

import glob
import struct

from PIL import Image
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2

from vinci_jax.evaluate import log_to_tensorboard, markdown_table, summarize

ROWS = [
    {"domain": "chart", "executed": True, "status": "ok", "metrics": {"execution": 1.0, "text_f1": 0.5}},
    {"domain": "svg", "executed": False, "status": "error", "metrics": {"execution": 0.0, "ssim": 0.0}},
]


def _events(logdir):
    events = []
    for path in glob.glob(f"{logdir}/events.out.tfevents.*"):
        data = open(path, "rb").read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
            offset += 12 + length + 4
    return events


def test_markdown_table_has_a_row_per_domain_and_says_what_is_missing():
    table = markdown_table(summarize("unisvg", ROWS))
    assert "| all | 2 | 0.500 | 0.500 | 0.000 |" in table
    assert "| chart | 1 | 1.000 | 0.500 | n/a |" in table and "| svg | 1 | 0.000 | n/a | 0.000 |" in table
    assert "`lpips`" in table


def test_tensorboard_scalars_and_gallery_panels(tmp_path):
    summary = summarize("synthetic", ROWS)
    images = {"a": (Image.new("RGB", (40, 20), "red"), None), "b": (Image.new("RGB", (10, 10), "blue"),) * 2}
    with SummaryWriter(str(tmp_path)) as writer:
        log_to_tensorboard(writer, summary, step=7, images=images)
    values = [v for e in _events(tmp_path) for v in e.summary.value]
    scalars = {v.tag: v.simple_value for v in values if v.HasField("simple_value")}
    assert scalars["eval/execution_rate"] == 0.5 and scalars["eval/chart/text_f1"] == 0.5
    panels = {v.tag: (v.image.width, v.image.height) for v in values if v.HasField("image")}
    assert panels == {"eval/gallery/a": (1024, 256), "eval/gallery/b": (512, 256)}
