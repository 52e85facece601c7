"""The rollout bench's vLLM worker protocol from the main venv (no vLLM here: the round must fail, saying why)."""

import importlib.util
import io
import json

import numpy as np
import pytest

from vinci_jax.bench import rollout_vllm

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")


def _replies(requests):
    out = io.StringIO()
    rollout_vllm.serve(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), out)
    lines = out.getvalue().splitlines()
    assert all(line.startswith(rollout_vllm.REPLY) for line in lines)
    return [json.loads(line[len(rollout_vllm.REPLY) :]) for line in lines]


def test_worker_sets_up_the_bench_prompts_in_vllms_form_and_reports_a_missing_vllm(tmp_path):
    vocab, pad, start, end = 1000, 990, 992, 993
    config = {"text_config": {"vocab_size": vocab}, "image_token_id": pad, "video_token_id": 991,
              "vision_start_token_id": start, "vision_end_token_id": end}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    prompt = {"input_ids": [start, *[pad] * 16, end, 5, 6], "image_grid_thw": [[1, 8, 8]]}
    setup = {"op": "setup", "model_dir": str(tmp_path), "image_side": 112, "merge_size": 2, "prompts": [prompt],
             "lengths": [3, 7], "max_num_seqs": 64}  # fmt: skip
    bad = dict(setup, prompts=[dict(prompt, input_ids=[start, *[pad] * 15, end])])
    replies = _replies([setup, {"op": "round", "seed": 0}, {"op": "frobnicate"}, bad, {"op": "close"}])
    assert replies[0] == {"ok": True}
    assert "VllmNotInstalled" in replies[1]["error"] and "make setup-vllm" in replies[1]["error"]
    assert "unknown op 'frobnicate'" in replies[2]["error"]
    assert "do not match" in replies[3]["error"]  # 15 pads for a 16-token image
    assert replies[4] == {"ok": True}


def test_worker_prompts_collapse_pads_and_carry_one_image_of_the_grid():
    prompts, images = rollout_vllm._worker_prompts(
        {"prompts": [{"input_ids": [7, *[5] * 2, 8, 1], "image_grid_thw": [[1, 4, 2]]}], "image_token_id": 5,
         "merge_size": 2}
    )  # fmt: skip
    assert prompts[0]["input_ids"] == [7, 5, 8, 1] and len(prompts[0]["expanded_ids"]) == 5
    assert [im.size for im in images[0]] == [(28, 56)]  # (width, height) = (2, 4) patches of 14
    assert np.asarray(images[0][0]).dtype == np.uint8


def test_missing_vllm_venv_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("VINCI_JAX_VLLM_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(FileNotFoundError, match="make setup-vllm"):
        rollout_vllm.vllm_python()
