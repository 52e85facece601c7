"""Convert the public VinciCoder parquet files into ArrayRecord shards of `Record`s, with a skip report.

Inputs, as users download them (see shared/reference/virl.md):
- SFT (ms-swift): `messages` = list of {role, content} with "<image>" placeholders, `images` = list of image bytes,
  paths (relative to the parquet file) or HF-datasets {"bytes", "path"} structs.
- RL (EasyR1): `problem` with "<image>", `answer` (the gold code), `images` as above.

Rows are streamed in batches (the SFT set is 1.6M rows). A bad row (undecodable or missing image, missing fields,
placeholder/image count mismatch, no fenced code block in the assistant turn) is skipped and counted by reason, never
crashing the build; exact duplicates (same images and text) are dropped and counted.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from vinci_data.records import Record, RecordWriter, write_stats

IMAGE_TOKEN = "<image>"
_FENCE = re.compile(r"```[^\n`]*\n.*?```", re.DOTALL)
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
MAX_SKIP_EXAMPLES = 20


class BadRow(ValueError):
    """A row that cannot become a record; `reason` is the counted category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _image_bytes(item: Any, base_dir: str) -> bytes:
    """Bytes of one `images` entry: raw bytes, a path (relative to the parquet file) or a {"bytes","path"} struct."""
    if isinstance(item, dict):
        if item.get("bytes"):
            return bytes(item["bytes"])
        item = item.get("path")
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, str) and item:
        path = item if os.path.isabs(item) else os.path.join(base_dir, item)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise BadRow("missing_image", f"{item}: {e.strerror}") from None
    raise BadRow("missing_image", f"unusable images entry of type {type(item).__name__}")


def _check_image(data: bytes) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.width < 1 or img.height < 1:
                raise BadRow("undecodable_image", "empty image")
    except BadRow:
        raise
    except Exception as e:  # PIL raises many types for bad data
        raise BadRow("undecodable_image", f"{type(e).__name__}: {e}") from None


def _images(row: dict[str, Any], base_dir: str) -> list[bytes]:
    raw = row.get("images")
    if raw is None:
        return []
    items = raw if isinstance(raw, list | tuple) else [raw]
    out = [_image_bytes(item, base_dir) for item in items]
    for data in out:
        _check_image(data)
    return out


def _messages(row: dict[str, Any]) -> list[dict[str, str]]:
    raw = row.get("messages")
    if isinstance(raw, str):  # some dumps store the list as JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BadRow("missing_fields", f"messages is not JSON: {e}") from None
    if not raw:
        raise BadRow("missing_fields", "no messages")
    messages = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRow("missing_fields", "a message lacks a string role or content")
        messages.append({"role": m["role"], "content": m["content"]})
    roles = [m["role"] for m in messages]
    if "user" not in roles or roles[-1] != "assistant":
        raise BadRow("missing_fields", f"roles {roles}: need a user turn and a final assistant turn")
    return messages


def _domain(explicit: Any, file_stem: str, language: str, code: str) -> str:
    if isinstance(explicit, str) and explicit:
        name = _DOMAIN_ALIASES.get(explicit.lower(), explicit.lower())
        return name if name in ("chart", "svg", "web", "tikz", "chem") else "other"
    stem = file_stem.lower()
    for key, domain in _FILE_DOMAINS:
        if key in stem:
            return domain
    if language == "python" and "rdkit" in code.lower():
        return "chem"
    return _LANGUAGE_DOMAINS.get(language, "other")


def _content_key(images: Sequence[bytes], texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for data in images:
        h.update(hashlib.sha256(data).digest())
    for text in texts:
        h.update(len(text).to_bytes(8, "little"))
        h.update(text.encode("utf-8"))
    return h.hexdigest()


def row_to_record(row: dict[str, Any], kind: str, file_path: str, row_index: int) -> tuple[Record, str]:
    """One parquet row -> (Record, dedupe key); raises BadRow with the skip reason."""
    from renderers import language_from_prompt

    base_dir = os.path.dirname(os.path.abspath(file_path))
    stem = os.path.splitext(os.path.basename(file_path))[0]
    task = str(row.get("task") or ("refine" if "refine" in stem.lower() else "generate"))
    if kind == "sft":
        messages = _messages(row)
        images = _images(row, base_dir)
        placeholders = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
        prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        answer_text = messages[-1]["content"]
        if not _FENCE.search(answer_text):
            raise BadRow("no_code_block", "the assistant turn has no fenced code block")
        texts = [f"{m['role']}\n{m['content']}" for m in messages]
        problem, answer = "", ""
        language = language_from_prompt(prompt)
    elif kind == "rl":
        problem, answer = row.get("problem"), row.get("answer")
        if not isinstance(problem, str) or not problem or not isinstance(answer, str) or not answer.strip():
            raise BadRow("missing_fields", "problem and answer must be non-empty strings")
        images = _images(row, base_dir)
        placeholders = problem.count(IMAGE_TOKEN)
        messages, texts, answer_text = [], [problem, answer], answer
        language = language_from_prompt(problem)
    else:
        raise ValueError(f"kind must be 'sft' or 'rl', got {kind!r}")
    if not images:
        raise BadRow("missing_image", "row has no images")
    if placeholders != len(images):
        raise BadRow("image_count_mismatch", f"{placeholders} {IMAGE_TOKEN} placeholders for {len(images)} images")
    row_id = row.get("id")
    record = Record(
        id=str(row_id) if row_id not in (None, "") else f"{stem}-{row_index}",
        domain=_domain(row.get("domain"), stem, language, answer_text),
        task=task,
        language=language,
        images=images,
        messages=messages,
        problem=problem,
        answer=answer,
        split="train",
        meta={"source": os.path.basename(file_path), "row": row_index},
    )
    return record, _content_key(images, texts)


def iter_rows(path: str, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size):
        yield from batch.to_pylist()


def _split_for(key: str, val_fraction: float) -> str:
    if val_fraction <= 0:
        return "train"
    bucket = int(key[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def convert(
    inputs: Sequence[str],
    out_dir: str,
    kind: str,
    *,
    rows_per_shard: int = 20_000,
    val_fraction: float = 0.0,
    dedupe: bool = True,
) -> dict[str, Any]:
    """Convert parquet `inputs` of `kind` ("sft" | "rl") into `out_dir`; returns (and writes) stats.json."""
    import pyarrow.parquet as pq

    if kind not in ("sft", "rl"):
        raise ValueError(f"kind must be 'sft' or 'rl', got {kind!r}")
    missing = [p for p in inputs if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"parquet inputs not found: {missing}")
    total_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in inputs)
    num_shards = max(1, math.ceil(total_rows / rows_per_shard))
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    skip_examples: list[dict[str, Any]] = []
    seen: set[str] = set()
    written = 0
    with RecordWriter(out_dir, num_shards=num_shards) as writer:
        for path in inputs:
            name = os.path.basename(path)
            for index, row in enumerate(iter_rows(path)):
                try:
                    record, key = row_to_record(row, kind, path, index)
                except BadRow as bad:
                    counts["skipped"][bad.reason] += 1
                    counts["skipped_by_file"][f"{name}/{bad.reason}"] += 1
                    if len(skip_examples) < MAX_SKIP_EXAMPLES:
                        skip_examples.append({"file": name, "row": index, "reason": bad.reason, "detail": bad.detail})
                    continue
                if dedupe and key in seen:
                    counts["duplicates"][record.domain] += 1
                    continue
                seen.add(key)
                record.split = _split_for(key, val_fraction)
                writer.write(record)
                written += 1
                counts["domain"][record.domain] += 1
                counts["task"][record.task] += 1
                counts["split"][record.split] += 1
                counts["language"][record.language] += 1
                counts["domain/task/split"][f"{record.domain}/{record.task}/{record.split}"] += 1
    stats = {
        "kind": kind,
        "inputs": [os.path.basename(p) for p in inputs],
        "rows": total_rows,
        "written": written,
        "skipped_total": sum(counts["skipped"].values()),
        "duplicates_total": sum(counts["duplicates"].values()),
        "skip_examples": skip_examples,
        **{table: dict(sorted(c.items())) for table, c in sorted(counts.items())},
    }
    for table in ("skipped", "duplicates"):
        stats.setdefault(table, {})
    write_stats(out_dir, stats)
    return stats
