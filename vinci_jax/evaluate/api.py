"""Entry points: evaluate a policy in a training loop, or predictions / a checkpoint from the command line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vinci_jax.evaluate.evaluator import EvalConfig, EvalResult, Evaluator
from vinci_jax.evaluate.generation import codes_from_responses, generate_responses
from vinci_jax.evaluate.loaders import records_to_sample
from vinci_jax.evaluate.report import log_to_tensorboard, write_report
from vinci_jax.evaluate.samples import EvalSample


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


def read_predictions(path: str, samples: Sequence[EvalSample]) -> list[str | None]:
    """A JSONL of {"id", "code"} (verbatim code) or {"id", "response"} (fenced code is extracted) per sample.

    Samples without a prediction get None (counted as "no_code"); ids not in the suite are an error.
    """
    by_id: dict[str, str | None] = {}
    language = {s.id: s.language for s in samples}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            sample_id = str(row.get("id"))
            if sample_id not in language:
                raise ValueError(f"{path}:{n}: prediction id {sample_id!r} is not a sample of this suite")
            if "code" in row:
                by_id[sample_id] = row["code"]
            elif "response" in row:
                by_id[sample_id] = codes_from_responses([s for s in samples if s.id == sample_id], [row["response"]])[0]
            else:
                raise ValueError(f"{path}:{n}: a prediction needs a `code` or a `response` field")
    return [by_id.get(s.id) for s in samples]


def evaluate_codes(suite: str, samples: Sequence[EvalSample], codes: Sequence[str | None],
                   config: EvalConfig | None = None, judge: Any = None) -> EvalResult:  # fmt: skip
    with Evaluator(config, judge) as evaluator:
        return evaluator.evaluate(suite, samples, codes)
