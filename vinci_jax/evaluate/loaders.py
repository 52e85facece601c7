"""Loaders: benchmark releases (as laid out on disk after download) and our synthetic test split -> EvalSamples.

Layouts assumed (PATH is what `--data` points at):
- chartmimic: the ChartMimic release's direct-mimic folder: `PATH/ori_500/` (or `PATH/` itself) holding
  `<name>.py` (gold matplotlib script) + `<name>.png` (target) pairs.
- plot2code: the Plot2Code test set (HF TencentARC/Plot2Code) exported as `*.parquet` or `*.jsonl` (a file or a
  folder of them); rows with `code`, `image` (HF image struct {"bytes", "path"}, raw bytes, or a path relative to
  the file) and optional `instruction` and `id` / `url`.
- chartx: the ChartX release: `PATH/ChartX_annotation.json`, a list of entries with `imgname`, `img` (image path
  relative to PATH), `chart_type` and `redrawing: {"output": gold python code}`.
- design2code: the Design2Code test set (HF SALT-NLP/Design2Code `testset_final`): `PATH/<n>.html` + `<n>.png`.
- unisvg: UniSVG rows (`*.parquet` / `*.jsonl`) with `svg` (or `code`) and optional `image`; items without a
  picture get the render of their gold SVG as target.
- tikz: a DaTikZ-style set (`*.parquet` / `*.jsonl`) with `code` (a LaTeX document or tikzpicture), `image`, and
  optional `caption`.
- molecules: `*.jsonl` / `*.csv` / `*.parquet` rows with `smiles`, optional `image` and `code` (gold RDKit
  script; generated from the SMILES when absent, see `gold_code_for_smiles`).
- synthetic: our ArrayRecord dataset directory (`vinci_data`), split `test`; the domain of each record picks its
  metrics (chart -> ChartMimic low-level, web -> Design2Code, svg -> UniSVG SSIM, tikz -> compile + similarity,
  chem -> molecules).
Rows that cannot be read are skipped and counted (`LoadReport.skipped`), never dropped silently.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import glob
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from renderers import extract_code
from vinci_jax.evaluate.samples import EvalSample, make_sample

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


@dataclasses.dataclass
class LoadReport:
    samples: list[EvalSample]
    skipped: list[str]  # "<where>: <why>"


def gold_code_for_smiles(smiles: str, size: int = 400) -> str:
    """The canonical RDKit drawing script of a molecule (gold code of molecule sets that ship only SMILES)."""
    return (
        "from rdkit import Chem\n"
        "from rdkit.Chem import Draw\n"
        f"mol = Chem.MolFromSmiles({smiles!r})\n"
        f"Draw.MolToImage(mol, size=({size}, {size})).save('molecule.png')\n"
    )


# ---------------------------------------------------------------------------------------------- row files


def _row_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"benchmark data {path!r} does not exist; point --data at the downloaded release")
    files = []
    for ext in ("parquet", "jsonl", "json", "csv"):
        files += sorted(glob.glob(os.path.join(path, "**", f"*.{ext}"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no *.parquet / *.jsonl / *.json / *.csv files under {path!r}")
    return files


def _iter_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(origin, row) for every row of every row file under path."""
    for file in _row_files(path):
        if file.endswith(".parquet"):
            import pyarrow.parquet as pq

            for i, row in enumerate(pq.read_table(file).to_pylist()):
                yield f"{file}:{i}", {**row, "_dir": os.path.dirname(file)}
        elif file.endswith(".jsonl"):
            with open(file) as f:
                for i, line in enumerate(f):
                    if line.strip():
                        yield f"{file}:{i + 1}", {**json.loads(line), "_dir": os.path.dirname(file)}
        elif file.endswith(".json"):
            with open(file) as f:
                data = json.load(f)
            for i, row in enumerate(data if isinstance(data, list) else data.get("data", [])):
                yield f"{file}:{i}", {**row, "_dir": os.path.dirname(file)}
        else:
            with open(file, newline="") as f:
                for i, row in enumerate(csv.DictReader(f)):
                    yield f"{file}:{i + 2}", {**row, "_dir": os.path.dirname(file)}


def _image_bytes(value: Any, base_dir: str) -> bytes | None:
    """HF image struct, raw bytes, base64 text or a path (relative to the row file) -> encoded image bytes."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
        if not value:
            return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        path = value if os.path.isabs(value) else os.path.join(base_dir, value)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as err:
            raise ValueError(f"image {value[:80]!r} is neither a file nor base64") from err
    raise ValueError(f"cannot read an image from a {type(value).__name__}")


def _rows_loader(suite: str, domain: str, code_keys: tuple[str, ...], prompt_keys: tuple[str, ...]):
    def load(path: str) -> LoadReport:
        samples, skipped = [], []
        for origin, row in _iter_rows(path):
            try:
                code = next((row[k] for k in code_keys if row.get(k)), None)
                image = _image_bytes(row.get("image"), row["_dir"])
                meta = {k: row[k] for k in ("smiles", "chart_type", "caption", "url") if row.get(k)}
                if domain == "chem" and code is None and meta.get("smiles"):
                    code = gold_code_for_smiles(meta["smiles"])
                if code is None and image is None:
                    raise ValueError("neither gold code nor image")
                prompt = next((row[k] for k in prompt_keys if row.get(k)), None)
                sample_id = str(row.get("id") or row.get("name") or origin.rsplit("/", 1)[-1])
                samples.append(make_sample(suite, domain, sample_id, image, code, prompt, **meta))
            except (ValueError, KeyError, TypeError) as err:
                skipped.append(f"{origin}: {err}")
        return LoadReport(samples, skipped)

    return load


def _paired_files_loader(suite: str, domain: str, code_ext: str, subdir: str | None = None):
    def load(path: str) -> LoadReport:
        root = os.path.join(path, subdir) if subdir and os.path.isdir(os.path.join(path, subdir)) else path
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{suite} data folder {root!r} does not exist")
        samples, skipped = [], []
        for code_path in sorted(glob.glob(os.path.join(root, f"*{code_ext}")), key=_natural_key):
            stem = os.path.splitext(code_path)[0]
            image_path = next((stem + e for e in IMAGE_EXTENSIONS if os.path.isfile(stem + e)), None)
            if image_path is None:
                skipped.append(f"{code_path}: no image beside it ({'/'.join(IMAGE_EXTENSIONS)})")
                continue
            with open(code_path, encoding="utf-8", errors="replace") as f:
                code = f.read()
            with open(image_path, "rb") as f:
                image = f.read()
            samples.append(make_sample(suite, domain, os.path.basename(stem), image, code))
        return LoadReport(samples, skipped)

    return load


def _natural_key(path: str) -> tuple:
    stem = os.path.splitext(os.path.basename(path))[0]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def load_chartx(path: str) -> LoadReport:
    annotation = os.path.join(path, "ChartX_annotation.json")
    if not os.path.isfile(annotation):
        raise FileNotFoundError(f"ChartX layout needs {annotation!r}")
    with open(annotation) as f:
        entries = json.load(f)
    samples, skipped = [], []
    for i, entry in enumerate(entries):
        try:
            code = (entry.get("redrawing") or {}).get("output")
            image = _image_bytes(entry["img"], path)
            name = str(entry.get("imgname") or i)
            prompt = (entry.get("redrawing") or {}).get("instruction")
            prompt = None if prompt and "python" not in prompt.lower() else prompt
            samples.append(make_sample("chartx", "chart", name, image, code, prompt,
                                       chart_type=entry.get("chart_type", "")))  # fmt: skip
        except (ValueError, KeyError, TypeError) as err:
            skipped.append(f"{annotation}[{i}]: {err}")
    return LoadReport(samples, skipped)


def load_synthetic(path: str, split: str = "test") -> LoadReport:
    from vinci_data.records import read_records

    samples, skipped = [], []
    for record in read_records(path, split):
        try:
            samples.append(records_to_sample(record))
        except (ValueError, IndexError) as err:
            skipped.append(f"{path}:{record.id}: {err}")
    if not samples and not skipped:
        raise FileNotFoundError(f"no {split!r} records under {path!r} (expected {split}-*-of-*.array_record)")
    return LoadReport(samples, skipped)


def records_to_sample(record: Any, suite: str = "synthetic") -> EvalSample:
    """A vinci_data Record -> EvalSample; its `answer` is the gold code (unfenced if it came fenced) and its
    domain's synthetic render options (viewport, dpi) are the ones its target was rendered with."""
    domain = record.domain if record.domain in ("chart", "web", "svg", "tikz", "chem") else "other"
    gold = record.answer or None
    if gold and gold.lstrip().startswith("```"):
        gold = extract_code(gold, record.language) or gold
    sample = make_sample(suite, domain, record.id, record.target_image(), gold, record.prompt(),
                         task=record.task, difficulty=record.difficulty)  # fmt: skip
    sample.language = record.language
    sample.render_options = _synthetic_render_options(record.domain)
    return sample


def _synthetic_render_options(domain: str) -> dict[str, Any]:
    try:
        from vinci_data.synth.build import DOMAIN_REGISTRY
    except ImportError:  # an older vinci_data: renderer defaults
        return {}
    spec = DOMAIN_REGISTRY.get(domain)
    return dict(spec.render_options) if spec is not None else {}


LOADERS: dict[str, Callable[[str], LoadReport]] = {
    "chartmimic": _paired_files_loader("chartmimic", "chart", ".py", subdir="ori_500"),
    "plot2code": _rows_loader("plot2code", "chart", ("code",), ("instruction",)),
    "chartx": load_chartx,
    "design2code": _paired_files_loader("design2code", "web", ".html"),
    "unisvg": _rows_loader("unisvg", "svg", ("svg", "code"), ("instruction", "question")),
    "tikz": _rows_loader("tikz", "tikz", ("code",), ()),
    "molecules": _rows_loader("molecules", "chem", ("code",), ("instruction",)),
    "synthetic": load_synthetic,
}


def load_suite(name: str, path: str, limit: int | None = None) -> LoadReport:
    if name not in LOADERS:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(LOADERS)}")
    report = LOADERS[name](path)
    if limit is not None:
        report.samples = report.samples[:limit]
    return report
