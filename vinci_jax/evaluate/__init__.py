"""Benchmark evaluation: loaders for the public releases and our synthetic split, metrics, batch evaluator, reports.

`python -m vinci_jax.evaluate --help`; training loops call `evaluate_policy(model, processor, records, ...)`.
"""

from vinci_jax.evaluate.api import evaluate_codes, evaluate_policy, read_predictions
from vinci_jax.evaluate.evaluator import DOMAIN_METRICS, EvalConfig, EvalResult, Evaluator, summarize
from vinci_jax.evaluate.judge import JUDGE_METRICS, Judge
from vinci_jax.evaluate.loaders import LOADERS, LoadReport, load_suite
from vinci_jax.evaluate.report import log_to_tensorboard, markdown_table, write_report
from vinci_jax.evaluate.samples import EvalSample, make_sample

__all__ = [
    "DOMAIN_METRICS",
    "JUDGE_METRICS",
    "LOADERS",
    "EvalConfig",
    "EvalResult",
    "EvalSample",
    "Evaluator",
    "Judge",
    "LoadReport",
    "evaluate_codes",
    "evaluate_policy",
    "load_suite",
    "log_to_tensorboard",
    "make_sample",
    "markdown_table",
    "read_predictions",
    "summarize",
    "write_report",
]
