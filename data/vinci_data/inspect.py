"""Look at a dataset directory: text summaries of records and a contact sheet of target images with their prompts."""

from __future__ import annotations

import io
import itertools
import os
import textwrap
from collections.abc import Sequence

from vinci_data.records import Record, read_records

THUMB = 256
CAPTION_LINES = 5
CAPTION_CHARS = 40


def describe(record: Record, width: int = 100) -> str:
    """A few lines about one record: id, domain/task/split/difficulty, prompt and answer excerpts."""
    answer = record.answer or (record.messages[-1]["content"] if record.messages else "")
    sizes = []
    for data in record.images:
        sizes.append(_image_size(data))
    head = (
        f"[{record.id}] domain={record.domain} task={record.task} split={record.split} "
        f"difficulty={record.difficulty} language={record.language} images={sizes}"
    )
    prompt = textwrap.shorten(record.prompt().replace("\n", " | "), width)
    code = textwrap.shorten(answer.replace("\n", " | "), width)
    return f"{head}\n  prompt: {prompt}\n  answer: {code}"


def _image_size(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return f"{img.width}x{img.height}"


def sample_records(directory: str, split: str = "train", count: int = 12, per_domain: bool = True) -> list[Record]:
    """Up to `count` records, spread over domains and tasks when `per_domain`, in storage order otherwise."""
    records = read_records(directory, split)
    if not per_domain:
        return list(itertools.islice(records, count))
    buckets: dict[tuple[str, str], list[Record]] = {}
    for record in itertools.islice(records, 5000):
        group = buckets.setdefault((record.domain, record.task), [])
        if len(group) < count:
            group.append(record)
    chosen: list[Record] = []
    for round_index in range(count):
        for key in sorted(buckets):
            if round_index < len(buckets[key]) and len(chosen) < count:
                chosen.append(buckets[key][round_index])
    return chosen


def contact_sheet(records: Sequence[Record], path: str, columns: int = 4) -> str:
    """A PNG grid: each cell is a record's target image with domain/task and the start of its prompt."""
    from PIL import Image, ImageDraw

    if not records:
        raise ValueError(f"no records to draw into {path!r}; is the dataset split empty?")
    line_height = 12
    cell_w, cell_h = THUMB + 8, THUMB + 8 + line_height * (CAPTION_LINES + 1)
    rows = (len(records) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, record in enumerate(records):
        x, y = (i % columns) * cell_w + 4, (i // columns) * cell_h + 4
        with Image.open(io.BytesIO(record.target_image())) as img:
            thumb = img.convert("RGB")
            thumb.thumbnail((THUMB, THUMB))
        sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        draw.rectangle([x - 1, y - 1, x + THUMB, y + THUMB], outline=(200, 200, 200))
        caption = [f"{record.domain}/{record.task} d{record.difficulty} {record.id}"]
        prompt = record.prompt().replace("<image>", "").strip().replace("\n", " ")
        caption += textwrap.wrap(prompt, CAPTION_CHARS)[: CAPTION_LINES - 1]
        for j, line in enumerate(caption):
            draw.text((x, y + THUMB + 4 + j * line_height), line, fill=(0, 0, 0) if j else (20, 60, 160))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path, format="PNG")
    return path
