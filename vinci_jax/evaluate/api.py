"""Entry points: evaluate a policy in a training loop, or predictions / a checkpoint from the command line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from renderers import extract_code
from vinci_jax.evaluate.evaluator import EvalConfig, EvalResult, Evaluator
from vinci_jax.evaluate.generation import codes_from_responses, generate_responses
from vinci_jax.evaluate.loaders import records_to_sample
from vinci_jax.evaluate.report import log_to_tensorboard, write_report
from vinci_jax.evaluate.samples import EvalSample
from vinci_jax.paths import as_path


def _as_samples(records: Sequence[Any], suite: str) -> list[EvalSample]:
    return [r if isinstance(r, EvalSample) else records_to_sample(r, suite) for r in records]


def evaluate_policy(
    model: Any,
    processor: Any,
    records: Sequence[Any],
    *,
    suite: str = "synthetic",
    max_new_tokens: int = 1024,
    batch_size: int = 8,
    evaluator: Evaluator | None = None,
    out_dir: str | None = None,
    writer: Any = None,
    step: int = 0,
) -> dict[str, Any]:
    """Greedy-generate for held-out records (vinci_data Records or EvalSamples), score, return the summary.

    For SFT / ViRL loops: pass a long-lived `evaluator` to keep its pools warm between calls, `writer` (tensorboardX)
    to log scalars and a few target|prediction panels at `step`, `out_dir` to also write the full report.
    """
    samples = _as_samples(records, suite)
    responses = generate_responses(model, processor, samples, max_new_tokens=max_new_tokens, batch_size=batch_size)
    own = evaluator is None
    evaluator = evaluator or Evaluator()
    try:
        result = evaluator.evaluate(suite, samples, codes_from_responses(samples, responses))
    finally:
        if own:
            evaluator.close()
    for row, response in zip(result.rows, responses, strict=True):
        row["response"] = response
    if out_dir:
        write_report(out_dir, result.rows, result.summary, result.images)
    if writer is not None:
        log_to_tensorboard(writer, result.summary, step, result.images)
    return result.summary


def read_predictions(path: str, samples: Sequence[EvalSample]) -> tuple[list[str | None], list[str]]:
    """A JSONL of {"id", "code"} (verbatim code) or {"id", "response"} (fenced code is extracted) per sample.

    Returns (code per sample, ids in the file that name no sample). Samples without a prediction get None (scored as
    "no_code"); unknown ids are returned (e.g. samples cut by --limit); a file that matches no sample is an error.
    """
    by_id: dict[str, str | None] = {}
    unknown: list[str] = []
    language = {s.id: s.language for s in samples}
    with as_path(path).open() as f:  # gs:// too
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path}:{n}: not a JSON object ({err})") from err
            sample_id = str(row.get("id"))
            if sample_id not in language:
                unknown.append(sample_id)
            elif "code" in row:
                by_id[sample_id] = row["code"]
            elif "response" in row:
                by_id[sample_id] = extract_code(str(row["response"]), language[sample_id])
            else:
                raise ValueError(f"{path}:{n}: a prediction needs a `code` or a `response` field")
    if unknown and not by_id:
        raise ValueError(f"{path}: no prediction id matches a sample of this suite (first ids: {unknown[:3]})")
    return [by_id.get(s.id) for s in samples], unknown


def evaluate_codes(suite: str, samples: Sequence[EvalSample], codes: Sequence[str | None],
                   config: EvalConfig | None = None, judge: Any = None) -> EvalResult:  # fmt: skip
    with Evaluator(config, judge) as evaluator:
        return evaluator.evaluate(suite, samples, codes)
