"""Convert the published VinciCoder parquet files into ArrayRecord shards of `Record`s, with a skip report.

The layout of each file is detected from its columns (`vinci_data.layouts`: flat VinciCoder SFT, ms-swift messages,
EasyR1 RL). At the released scale (1.6M SFT rows) the work is cut into units of consecutive row groups of one file
(about `rows_per_shard` rows each, planned from parquet metadata alone), so that:

- memory is bounded whatever the file size: a unit streams its row groups in small batches;
- units run in parallel (processes), over files and row groups alike;
- a killed conversion resumes: each unit writes its shards `<split>-<unit>-of-<units>.array_record` under
  temporary names, renames them, and only then writes its marker `.convert/unit-<unit>.json`; a unit with a
  marker is not redone (the plan, `.convert/plan.json`, must match, else the build starts over);
- the output is deterministic: a unit's content depends only on its rows, splits come from content hashes, and
  exact duplicates are dropped in (file, row) order by one pass over the units' key lists at the end.

A bad row is skipped and counted by reason (with example row ids per reason). A file that yields no rows, or skips
more than `max_skip_fraction` of its rows, fails the conversion (`ConvertError`) after stats.json is written.
Outputs may live in a bucket (`gs://...`): shards are staged on the local disk and uploaded unit by unit.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from etils import epath

from vinci_data.layouts import LAYOUTS, BadRow, Layout, RowContext, describe_layouts, detect_layout
from vinci_data.records import ARRAY_RECORD_OPTIONS, SPLITS, encode_record, shard_name, write_stats

PLAN_VERSION = 2
MAX_EXAMPLES_PER_REASON = 10
STATE_DIR = ".convert"
READ_BATCH_ROWS = 64  # rows decoded at a time: bounds memory together with one row group's buffers


class ConvertError(RuntimeError):
    """The conversion ran but its result is unusable (a file yielded nothing or skipped too much)."""

    def __init__(self, message: str, stats: dict[str, Any] | None = None):
        super().__init__(message)
        self.stats = stats or {}


@dataclasses.dataclass(frozen=True)
class Options:
    rows_per_shard: int = 20_000
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    dedupe: bool = True
    layout: str = "auto"
    max_skip_fraction: float = 0.2
    max_image_pixels: int = 8192 * 8192


@dataclasses.dataclass(frozen=True)
class Unit:
    index: int
    file: str
    layout: str
    row_groups: tuple[int, ...]
    first_row: int
    rows: int


def _is_remote(path: str) -> bool:
    return "://" in path


def plan_units(inputs: Sequence[str], options: Options) -> tuple[list[Unit], dict[str, dict[str, Any]]]:
    """Units of consecutive row groups (about rows_per_shard rows each) and, per file, its layout and columns."""
    import pyarrow.parquet as pq

    units: list[Unit] = []
    files: dict[str, dict[str, Any]] = {}
    for path in inputs:
        meta = pq.ParquetFile(path).metadata
        columns = list(pq.read_schema(path).names)
        layout = detect_layout(columns, options.layout, path)
        files[path] = {"layout": layout.name, "columns": columns, "rows": meta.num_rows, "bytes": os.path.getsize(path)}
        group: list[int] = []
        first = rows = 0
        start = 0
        for g in range(meta.num_row_groups):
            if not group:
                first = start
            group.append(g)
            rows += meta.row_group(g).num_rows
            start += meta.row_group(g).num_rows
            if rows >= options.rows_per_shard:
                units.append(Unit(len(units), path, layout.name, tuple(group), first, rows))
                group, rows = [], 0
        if group:
            units.append(Unit(len(units), path, layout.name, tuple(group), first, rows))
    return units, files


def split_for(key: str, val_fraction: float, test_fraction: float) -> str:
    """train / val / test from the row's content hash (stable across runs, file orders and machines)."""
    bucket = int(key[:8], 16) / 0xFFFFFFFF
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


def iter_unit_rows(unit: Unit) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(unit.file)
    index = unit.first_row
    for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=list(unit.row_groups)):
        for row in batch.to_pylist():
            yield index, row
            index += 1


def _unit_marker(out_dir: str, index: int) -> epath.Path:
    return epath.Path(out_dir) / STATE_DIR / f"unit-{index:05d}.json"


def convert_unit(unit: Unit, out_dir: str, num_units: int, options: Options) -> dict[str, Any]:
    """Convert one unit into its shards in `out_dir` and write its marker; returns the marker's content."""
    from array_record.python.array_record_module import ArrayRecordWriter

    layout: Layout = LAYOUTS[unit.layout]
    staging = tempfile.mkdtemp(prefix="vinci-convert-") if _is_remote(out_dir) else out_dir
    name = os.path.basename(unit.file)
    writers: dict[str, Any] = {}
    skipped: collections.Counter[str] = collections.Counter()
    examples: dict[str, list[str]] = collections.defaultdict(list)
    records: list[list[str]] = []  # [key, split, domain, task, language] of each written record, in order
    duplicates: collections.Counter[str] = collections.Counter()
    seen: set[str] = set()
    try:
        for row_index, row in iter_unit_rows(unit):
            ctx = RowContext(unit.file, row_index, options.max_image_pixels)
            try:
                record, key = layout.parse(row, ctx)
            except BadRow as bad:
                skipped[bad.reason] += 1
                if len(examples[bad.reason]) < MAX_EXAMPLES_PER_REASON:
                    examples[bad.reason].append(f"{name}:{row_index} {bad.detail}".rstrip())
                continue
            if options.dedupe and key in seen:
                duplicates[record.domain] += 1
                continue
            seen.add(key)
            record.split = split_for(key, options.val_fraction, options.test_fraction)
            if record.split not in writers:
                final = os.path.join(staging, shard_name(record.split, unit.index, num_units))
                writers[record.split] = ArrayRecordWriter(final + ".partial", ARRAY_RECORD_OPTIONS)
            writers[record.split].write(encode_record(record))
            records.append([key[:32], record.split, record.domain, record.task, record.language])
        for split, writer in writers.items():
            writer.close()
            final = os.path.join(staging, shard_name(split, unit.index, num_units))
            os.replace(final + ".partial", final)
            if staging != out_dir:
                epath.Path(final).copy(epath.Path(out_dir) / os.path.basename(final), overwrite=True)
        writers = {}
        marker = {
            "unit": dataclasses.asdict(unit),
            "rows": unit.rows,
            "skipped": dict(sorted(skipped.items())),
            "skip_examples": {k: v for k, v in sorted(examples.items())},
            "duplicates": dict(sorted(duplicates.items())),
            "records": records,
            "cross_duplicates_removed": [],
        }
        _write_json(_unit_marker(out_dir, unit.index), marker)
        return marker
    finally:
        for writer in writers.values():
            writer.close()
        if staging != out_dir:
            shutil.rmtree(staging, ignore_errors=True)


def _write_json(path: epath.Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, sort_keys=True)
    if _is_remote(os.fspath(path)):
        path.write_text(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_json(path: epath.Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _start_or_resume(out_dir: str, plan: dict[str, Any]) -> None:
    """Keep the units of an identical earlier plan; otherwise clear the directory's shards and markers."""
    root = epath.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    plan_path = root / STATE_DIR / "plan.json"
    if _read_json(plan_path) == plan:
        for stale in root.glob("*.array_record.partial"):
            stale.unlink()
        return
    for stale in [*root.glob("*-*-of-*.array_record"), *root.glob("*.array_record.partial")]:
        stale.unlink()
    state = root / STATE_DIR
    if state.exists():
        for path in state.iterdir():
            path.unlink()
    _write_json(plan_path, plan)


def _remove_cross_duplicates(out_dir: str, marker: dict[str, Any], drop: list[int], num_units: int) -> None:
    """Rewrite a unit's shards without the records at `drop` (duplicates of rows in earlier units)."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    unit = marker["unit"]["index"]
    dropped = set(drop)
    by_split: dict[str, list[bool]] = collections.defaultdict(list)  # keep flag of each record of a split
    for i, entry in enumerate(marker["records"]):
        by_split[entry[1]].append(i not in dropped)
    staging = tempfile.mkdtemp(prefix="vinci-dedupe-")
    try:
        for split, keep in by_split.items():
            name = shard_name(split, unit, num_units)
            source = os.fspath(epath.Path(out_dir) / name)
            reader = ArrayRecordReader(source)
            kept = [reader.read([j])[0] for j, flag in enumerate(keep) if flag]
            reader.close()
            target = epath.Path(out_dir) / name
            if not kept:
                target.unlink()
                continue
            local = os.path.join(staging, name)
            writer = ArrayRecordWriter(local, ARRAY_RECORD_OPTIONS)
            for raw in kept:
                writer.write(raw)
            writer.close()
            if _is_remote(out_dir):
                epath.Path(local).copy(target, overwrite=True)
            else:
                os.replace(local, os.fspath(target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for i in sorted(dropped):
        domain = marker["records"][i][2]
        marker["duplicates"][domain] = marker["duplicates"].get(domain, 0) + 1
    marker["cross_duplicates_removed"] = sorted(dropped)
    _write_json(_unit_marker(out_dir, unit), marker)


def _run_units(pending: list[Unit], out_dir: str, num_units: int, options: Options, workers: int) -> None:
    if workers <= 1 or len(pending) <= 1:
        for unit in pending:
            convert_unit(unit, out_dir, num_units, options)
        return
    # spawn: the parent may hold pyarrow / JAX threads, which fork would copy mid-flight
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(pending)), mp_context=context) as pool:
        futures = [pool.submit(convert_unit, unit, out_dir, num_units, options) for unit in pending]
        for future in concurrent.futures.as_completed(futures):
            future.result()


def convert(
    inputs: Sequence[str],
    out_dir: str,
    kind: str | None = None,
    *,
    rows_per_shard: int = 20_000,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    dedupe: bool = True,
    layout: str = "auto",
    max_skip_fraction: float = 0.2,
    max_image_pixels: int = 8192 * 8192,
    workers: int | None = None,
) -> dict[str, Any]:
    """Convert parquet `inputs` into `out_dir`; returns (and writes) stats.json. `kind` ("sft" | "rl"), when
    given, requires every file's layout to be of that kind. Raises ConvertError for unusable results."""
    out_dir = os.fspath(out_dir)
    missing = [p for p in inputs if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"parquet inputs not found: {missing}")
    if not 0 <= val_fraction + test_fraction < 1:
        raise ValueError(f"val_fraction + test_fraction must be in [0, 1), got {val_fraction} + {test_fraction}")
    options = Options(
        rows_per_shard=max(int(rows_per_shard), 1), val_fraction=val_fraction, test_fraction=test_fraction,
        dedupe=dedupe, layout=layout, max_skip_fraction=max_skip_fraction, max_image_pixels=max_image_pixels,
    )  # fmt: skip
    units, files = plan_units(inputs, options)
    if kind is not None:
        wrong = {os.path.basename(p): f["layout"] for p, f in files.items() if LAYOUTS[f["layout"]].kind != kind}
        if wrong:
            raise ValueError(f"--{kind} files must have a {kind} layout; these do not: {wrong}")
    plan = {
        "version": PLAN_VERSION,
        "options": dataclasses.asdict(options),
        "files": [{"path": os.path.abspath(p), **{k: files[p][k] for k in ("layout", "rows", "bytes")}} for p in files],
        "units": len(units),
    }
    _start_or_resume(out_dir, plan)
    done = {u.index for u in units if _unit_marker(out_dir, u.index).exists()}
    pending = [u for u in units if u.index not in done]
    _run_units(pending, out_dir, len(units), options, workers if workers is not None else (os.cpu_count() or 1))

    markers = [_read_json(_unit_marker(out_dir, u.index)) for u in units]
    if any(m is None for m in markers):
        raise RuntimeError(f"units without a marker after the run in {out_dir}; rerun to resume")
    if dedupe:
        seen: set[str] = set()
        for marker in markers:
            drop = []
            for i, entry in enumerate(marker["records"]):
                if entry[0] in seen and i not in marker["cross_duplicates_removed"]:
                    drop.append(i)
                seen.add(entry[0])
            if drop:
                _remove_cross_duplicates(out_dir, marker, marker["cross_duplicates_removed"] + drop, len(units))
    stats = _stats(inputs, files, markers, options)
    write_stats(out_dir, stats)
    if stats["errors"]:
        raise ConvertError("; ".join(stats["errors"]), stats)
    return stats


def _stats(
    inputs: Sequence[str], files: dict[str, dict[str, Any]], markers: list[dict[str, Any]], options: Options
) -> dict[str, Any]:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    examples: dict[str, list[str]] = collections.defaultdict(list)
    per_file: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for marker in markers:
        name = os.path.basename(marker["unit"]["file"])
        removed = set(marker["cross_duplicates_removed"])
        for reason, n in marker["skipped"].items():
            counts["skipped"][reason] += n
            counts["skipped_by_file"][f"{name}/{reason}"] += n
            per_file[name]["skipped"] += n
        for reason, ids in marker["skip_examples"].items():
            examples[reason].extend(ids[: MAX_EXAMPLES_PER_REASON - len(examples[reason])])
        for domain, n in marker["duplicates"].items():
            counts["duplicates"][domain] += n
        per_file[name]["rows"] += marker["rows"]
        for i, (_, split, domain, task, language) in enumerate(marker["records"]):
            if i in removed:
                continue
            per_file[name]["written"] += 1
            counts["domain"][domain] += 1
            counts["task"][task] += 1
            counts["split"][split] += 1
            counts["language"][language] += 1
            counts["domain/task/split"][f"{domain}/{task}/{split}"] += 1
    errors = []
    for path, info in files.items():
        name = os.path.basename(path)
        rows, written, skipped = per_file[name]["rows"], per_file[name]["written"], per_file[name]["skipped"]
        if written == 0:
            errors.append(
                f"{name} yielded no records ({rows} rows, {skipped} skipped; layout {info['layout']}, columns "
                f"{info['columns']}; known layouts: {describe_layouts()})"
            )
        elif rows and skipped / rows > options.max_skip_fraction:
            errors.append(
                f"{name} skipped {skipped} of {rows} rows (> max_skip_fraction {options.max_skip_fraction}; layout "
                f"{info['layout']}, columns {info['columns']}); see skipped / skip_examples in stats.json"
            )
    kinds = sorted({LAYOUTS[f["layout"]].kind for f in files.values()})
    stats = {
        "kind": kinds[0] if len(kinds) == 1 else "mixed",
        "inputs": [os.path.basename(p) for p in inputs],
        "layouts": {os.path.basename(p): f["layout"] for p, f in files.items()},
        "rows": sum(f["rows"] for f in files.values()),
        "written": sum(c["written"] for c in per_file.values()),
        "skipped_total": sum(counts["skipped"].values()),
        "duplicates_total": sum(counts["duplicates"].values()),
        "skip_examples": {k: v for k, v in sorted(examples.items())},
        "per_file": {k: dict(v) for k, v in sorted(per_file.items())},
        "shards": len(markers),
        "errors": errors,
        **{table: dict(sorted(c.items())) for table, c in sorted(counts.items())},
    }
    for table in ("skipped", "duplicates", "split"):
        stats.setdefault(table, {})
    stats["splits"] = [s for s in SPLITS if stats["split"].get(s)]
    return stats


__all__ = ["BadRow", "ConvertError", "Options", "convert", "plan_units", "split_for"]
