"""Rows whose render failed in the renderer itself (status infra) are reported, not scored as the model's 0."""

from vinci_jax.evaluate.evaluator import summarize


def _row(status, executed, ssim):
    return {"id": status, "suite": "s", "domain": "svg", "language": "svg", "executed": executed, "status": status,
            "metrics": {"execution": float(executed), "ssim": ssim}, "notes": []}  # fmt: skip


def test_infra_rows_are_counted_and_left_out_of_rates_and_means():
    infra = _row("infra", False, None)
    infra["metrics"] = dict.fromkeys(infra["metrics"])  # what Evaluator does to an infra row
    summary = summarize("s", [_row("ok", True, 0.8), _row("error", False, 0.0), infra])
    assert summary["infra_failures"] == 1 and summary["statuses"]["infra"] == 1
    assert summary["execution_rate"] == 0.5 and summary["metrics"]["ssim"] == 0.4
