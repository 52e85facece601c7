"""The published VinciCoder file layouts: which columns each has, and one row of each -> a `Record`.

- `vinci_sft` (VinciCoder-1.6M-SFT as released, e.g. chart2code_refine.parquet): flat `user_content` (the prompt;
  refine prompts carry the flawed code in a fence), `assistant_content` (the code, usually fenced) and `image`.
- `messages` (ms-swift): `messages` = [{role, content}], `images`; "<image>" markers are optional (ms-swift puts
  the missing ones at the front of the first user message, and so do we).
- `easyr1` (the RL prompts): `problem` (with "<image>"), `answer` (the gold code), `images`.

An image is encoded bytes, a path (relative to the parquet file), or an HF-datasets {"bytes", "path"} struct, alone
or in a list. A row that cannot become a record raises `BadRow` with the reason it is counted under.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from vinci_data.records import DOMAINS, Record

IMAGE_TOKEN = "<image>"
MAX_IMAGE_PIXELS = 8192 * 8192  # larger is a decompression bomb, not a chart
MAX_IMAGE_BYTES = 64 * 2**20
_FENCE = re.compile(r"```[^\n`]*\n.*?```", re.DOTALL)
_WHOLE_FENCE = re.compile(r"\A\s*```[^\n`]*\n(.*?)\n?```\s*\Z", re.DOTALL)
# Filename keywords -> domain, checked in order (files are per task, e.g. chart2code_refine.parquet).
_FILE_DOMAINS: tuple[tuple[str, str], ...] = (
    ("chem", "chem"),
    ("mol", "chem"),
    ("rdkit", "chem"),
    ("chart", "chart"),
    ("plot", "chart"),
    ("svg", "svg"),
    ("tikz", "tikz"),
    ("latex", "tikz"),
    ("web", "web"),
    ("html", "web"),
    ("design", "web"),
)
_LANGUAGE_DOMAINS = {"svg": "svg", "html": "web", "latex": "tikz", "python": "chart"}
_DOMAIN_ALIASES = {"html": "web", "latex": "tikz", "chemistry": "chem", "molecule": "chem", "charts": "chart"}


class BadRow(ValueError):
    """A row that cannot become a record; `reason` is the counted category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    kind: str  # "sft" | "rl"
    columns: tuple[str, ...]  # all required to detect this layout
    parse: Callable[[dict[str, Any], RowContext], tuple[Record, str]]


@dataclasses.dataclass(frozen=True)
class RowContext:
    file_path: str
    row_index: int
    max_image_pixels: int = MAX_IMAGE_PIXELS

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.file_path))[0]

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.file_path))


# ------------------------------------------------------------------------------------------------ fields
def _string(row: dict[str, Any], column: str, *, empty_reason: str) -> str:
    value = row.get(column)
    if value is None:
        raise BadRow("missing_fields", f"{column} is null")
    if not isinstance(value, str):
        raise BadRow("wrong_type", f"{column} is {type(value).__name__}, not a string")
    if not value.strip():
        raise BadRow(empty_reason, f"{column} is empty")
    return value


def _image_bytes(item: Any, base_dir: str) -> bytes:
    if isinstance(item, dict):
        if item.get("bytes"):
            return bytes(item["bytes"])
        item = item.get("path")
    if isinstance(item, bytes | bytearray | memoryview):
        if not len(item):
            raise BadRow("missing_image", "empty image bytes")
        return bytes(item)
    if isinstance(item, str) and item:
        path = item if os.path.isabs(item) else os.path.join(base_dir, item)
        try:
            with open(path, "rb") as f:
                return f.read(MAX_IMAGE_BYTES + 1)
        except OSError as e:
            raise BadRow("missing_image", f"{item}: {e.strerror}") from None
    if item is None:
        raise BadRow("missing_image", "image is null")
    raise BadRow("wrong_type", f"image entry of type {type(item).__name__}")


def check_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Raise BadRow unless `data` decodes fully to a non-empty image of at most `max_pixels` pixels."""
    from PIL import Image

    if len(data) > MAX_IMAGE_BYTES:
        raise BadRow("huge_image", f"more than {MAX_IMAGE_BYTES} bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:  # checked from the header, before decoding
                raise BadRow("huge_image", f"{img.width}x{img.height} is over {max_pixels} pixels")
            if img.width < 1 or img.height < 1:
                raise BadRow("undecodable_image", "empty image")
            img.load()
    except BadRow:
        raise
    except Image.DecompressionBombError as e:
        raise BadRow("huge_image", str(e)) from None
    except Exception as e:  # PIL raises many types for bad data
        raise BadRow("undecodable_image", f"{type(e).__name__}: {e}") from None


def images_of(raw: Any, ctx: RowContext) -> list[bytes]:
    """The decoded-and-checked image bytes of an `image`/`images` cell (one entry or a list of them)."""
    if raw is None:
        raise BadRow("missing_image", "no image")
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    if not items:
        raise BadRow("missing_image", "empty image list")
    out = [_image_bytes(item, ctx.base_dir) for item in items]
    for data in out:
        check_image(data, ctx.max_image_pixels)
    return out


def with_image_markers(text: str, count: int) -> str:
    """`text` with `count` "<image>" markers: missing ones go at the front (ms-swift's rule); extra ones are bad."""
    have = text.count(IMAGE_TOKEN)
    if have > count:
        raise BadRow("image_count_mismatch", f"{have} {IMAGE_TOKEN} markers for {count} images")
    return IMAGE_TOKEN * (count - have) + text


def _domain(explicit: Any, stem: str, language: str, code: str) -> str:
    if isinstance(explicit, str) and explicit:
        name = _DOMAIN_ALIASES.get(explicit.lower(), explicit.lower())
        return name if name in DOMAINS else "other"
    for key, domain in _FILE_DOMAINS:
        if key in stem.lower():
            return domain
    if language == "python" and "rdkit" in code.lower():
        return "chem"
    return _LANGUAGE_DOMAINS.get(language, "other")


def _task(row: dict[str, Any], stem: str) -> str:
    task = row.get("task")
    if isinstance(task, str) and task:
        return task
    return "refine" if "refine" in stem.lower() else "generate"


def content_key(images: Sequence[bytes], texts: Sequence[str]) -> str:
    """Hex digest of the images and texts of a row: equal rows (duplicates) have equal keys."""
    h = hashlib.sha256()
    for data in images:
        h.update(hashlib.sha256(data).digest())
    for text in texts:
        h.update(len(text).to_bytes(8, "little"))
        h.update(text.encode("utf-8"))
    return h.hexdigest()


def _record(row: dict[str, Any], ctx: RowContext, **fields: Any) -> Record:
    row_id = row.get("id")
    return Record(
        id=str(row_id) if row_id not in (None, "") else f"{ctx.stem}-{ctx.row_index}",
        task=_task(row, ctx.stem),
        split="train",
        meta={"source": os.path.basename(ctx.file_path), "row": ctx.row_index},
        **fields,
    )


def _sft_record(row: dict[str, Any], ctx: RowContext, messages: list[dict[str, str]], images: list[bytes]):
    from renderers import language_from_prompt

    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    language = language_from_prompt(prompt)
    answer = messages[-1]["content"]
    record = _record(
        row, ctx, domain=_domain(row.get("domain"), ctx.stem, language, answer), language=language,
        images=images, messages=messages,
    )  # fmt: skip
    return record, content_key(images, [f"{m['role']}\n{m['content']}" for m in messages])


# ------------------------------------------------------------------------------------------------ layouts
def parse_vinci_sft(row: dict[str, Any], ctx: RowContext) -> tuple[Record, str]:
    """Flat VinciCoder SFT: user_content / assistant_content / image. Bare code answers get a fence in the
    language the prompt asks for (the trainer and the reward read fenced code)."""
    from renderers import language_from_prompt

    user = _string(row, "user_content", empty_reason="empty_prompt")
    answer = _string(row, "assistant_content", empty_reason="empty_answer")
    images = images_of(row.get("image"), ctx)
    if not _FENCE.search(answer):
        answer = f"```{language_from_prompt(user)}\n{answer.strip()}\n```"
    messages = [
        {"role": "user", "content": with_image_markers(user, len(images))},
        {"role": "assistant", "content": answer},
    ]
    return _sft_record(row, ctx, messages, images)


def _messages(raw: Any) -> list[dict[str, str]]:
    if isinstance(raw, str):  # some dumps store the list as JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BadRow("wrong_type", f"messages is not JSON: {e}") from None
    if raw is None:
        raise BadRow("missing_fields", "messages is null")
    if not isinstance(raw, list | tuple):
        raise BadRow("wrong_type", f"messages is {type(raw).__name__}, not a list")
    if not raw:
        raise BadRow("missing_fields", "no messages")
    messages = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRow("wrong_type", "a message lacks a string role or content")
        messages.append({"role": m["role"], "content": m["content"]})
    roles = [m["role"] for m in messages]
    if "user" not in roles or roles[-1] != "assistant":
        raise BadRow("missing_fields", f"roles {roles}: need a user turn and a final assistant turn")
    return messages


def parse_messages(row: dict[str, Any], ctx: RowContext) -> tuple[Record, str]:
    """ms-swift messages + images; missing <image> markers go at the front of the first user message."""
    messages = _messages(row.get("messages"))
    images = images_of(row.get("images"), ctx)
    if not messages[-1]["content"].strip():
        raise BadRow("empty_answer", "the assistant turn is empty")
    if not _FENCE.search(messages[-1]["content"]):
        raise BadRow("no_code_block", "the assistant turn has no fenced code block")
    markers = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
    if markers > len(images):
        raise BadRow("image_count_mismatch", f"{markers} {IMAGE_TOKEN} markers for {len(images)} images")
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[first_user]["content"] = IMAGE_TOKEN * (len(images) - markers) + messages[first_user]["content"]
    return _sft_record(row, ctx, messages, images)


def parse_easyr1(row: dict[str, Any], ctx: RowContext) -> tuple[Record, str]:
    """EasyR1 RL prompt: problem / answer (the gold code; a whole-answer fence is unwrapped) / images."""
    from renderers import language_from_prompt

    problem = _string(row, "problem", empty_reason="empty_prompt")
    answer = _string(row, "answer", empty_reason="empty_answer")
    fenced = _WHOLE_FENCE.match(answer)
    if fenced:
        answer = fenced.group(1)
        if not answer.strip():
            raise BadRow("empty_answer", "the answer's code block is empty")
    images = images_of(row.get("images"), ctx)
    problem = with_image_markers(problem, len(images))
    language = language_from_prompt(problem)
    record = _record(
        row, ctx, domain=_domain(row.get("domain"), ctx.stem, language, answer), language=language,
        images=images, problem=problem, answer=answer,
    )  # fmt: skip
    return record, content_key(images, [problem, answer])


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("vinci_sft", "sft", ("user_content", "assistant_content", "image"), parse_vinci_sft),
        Layout("messages", "sft", ("messages", "images"), parse_messages),
        Layout("easyr1", "rl", ("problem", "answer", "images"), parse_easyr1),
    )
}


class LayoutError(ValueError):
    """A file whose columns fit no known layout (or not the one asked for)."""


def describe_layouts() -> str:
    return "; ".join(f"{name} ({', '.join(layout.columns)})" for name, layout in LAYOUTS.items())


def detect_layout(columns: Sequence[str], requested: str = "auto", path: str = "") -> Layout:
    """The layout of a file from its column names (`requested` names one and only checks it fits)."""
    names = set(columns)
    if requested != "auto":
        if requested not in LAYOUTS:
            raise LayoutError(f"unknown layout {requested!r}; known layouts: {describe_layouts()}")
        layout = LAYOUTS[requested]
        missing = [c for c in layout.columns if c not in names]
        if missing:
            raise LayoutError(f"{path}: layout {requested} needs columns {missing}; the file has {sorted(names)}")
        return layout
    for layout in LAYOUTS.values():
        if names.issuperset(layout.columns):
            return layout
    raise LayoutError(f"{path}: columns {sorted(names)} fit no known layout; known layouts: {describe_layouts()}")
