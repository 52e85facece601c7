"""vLLM's side of the rollout-engine scoreboard: the long-tailed batch through ViRL's vLLM path, in .venv-vllm.

vLLM lives in its own venv (`make setup-vllm`), so the rollout bench (`python -m vinci_jax.bench rollout --engines
...,vllm`) drives it through a worker process: `contender(setup)` starts `.venv-vllm/bin/python -m
vinci_jax.bench.rollout_vllm --worker` (or $VINCI_JAX_VLLM_PYTHON), hands it the bench's HF model dir, prompts and
per-row lengths once, and each timed round asks it to decode them. Request i continues prompt `i // n` for exactly
`lengths[i]` tokens (stop tokens ignored), so every engine decodes the same useful work. A round goes through the
path ViRL's rollouts take (`vllm_backend.stream_requests`: every request added to vLLM's engine, the engine stepped,
each rollout taken as it finishes, with ViRL's per-row seeds and sampled-token log-probs), and also reports when the
first rollout came back (`first_row_s`), the moment ViRL starts rendering. The worker keeps one
engine for all rounds, so interleaved rounds time decoding, not start-up; the round's wall is taken in the bench
process around the request (its IPC costs milliseconds).

Images: the bench model is a small random Qwen2.5-VL whose special tokens sit at the top of a 32k vocabulary, so the
worker writes a word-level tokenizer with Qwen's special-token names at those ids beside a preprocessor config that
keeps a 112x112 image at the bench's (1, 8, 8) grid; vLLM then runs its whole image path (HF processor, vision
tower, placeholder expansion, 3-D positions) on an image of the same grid as the other engines' patches (the pixels
differ; timing does not depend on them). Slot utilisation is 1 by construction: vLLM schedules only unfinished
requests, so it computes no decode slot for a finished row.

Standalone: `.venv-vllm/bin/python -m vinci_jax.bench rollout_vllm --model_dir DIR [--rounds 3]` decodes a
text-only long-tailed batch (8 prompts x 4 samples, lognormal lengths, median 64, capped at 512) with a model dir
that has its own tokenizer; prints a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REPLY = "@@vllm_worker "  # marks the worker's replies on its stdout (vLLM may print there too)
_ENGINES: dict[tuple[str, int], Any] = {}


def engine(model_dir: str, max_model_len: int, *, tokenizer: str | None = None, max_num_seqs: int = 64,
           kv_cache_memory_bytes: int = 256 << 20, dtype: str = "float32") -> Any:  # fmt: skip
    """A vLLM engine over `model_dir` (weights read from it), kept for later rounds."""
    from vinci_jax.sampling.vllm_backend import import_vllm

    key = (str(model_dir), int(max_model_len))
    if key not in _ENGINES:
        vllm = import_vllm()
        _ENGINES[key] = vllm.LLM(
            model=str(model_dir), tokenizer=tokenizer or str(model_dir), dtype=dtype,
            max_model_len=int(max_model_len), max_num_seqs=int(max_num_seqs),
            kv_cache_memory_bytes=int(kv_cache_memory_bytes), enforce_eager=True, seed=0,
            limit_mm_per_prompt={"image": 4, "video": 0}, mm_device_do_normalize=False,
        )  # fmt: skip
    return _ENGINES[key]


def vllm_round(
    model_dir: str,
    prompts: Sequence[dict[str, Any]],
    lengths: Sequence[int],
    *,
    tokenizer: str | None = None,
    images: Sequence[Sequence[Any]] | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    max_num_seqs: int = 64,
) -> dict[str, Any]:
    """Decode `lengths[i]` tokens for request i (prompt i // samples_per_prompt) through ViRL's streaming path
    (`vllm_backend.stream_requests`, per-row seeds and log-probs as ViRL asks); returns wall and tokens/s.

    `prompts` hold `input_ids` in vLLM's form (one image pad per image) when `images` gives each prompt's images."""
    import jax

    from vinci_jax.sampling import SamplingParams
    from vinci_jax.sampling.vllm_backend import finished_row, import_vllm, stream_requests, vllm_sampling_params
    from vinci_jax.sampling.vllm_inputs import request_seeds

    vllm = import_vllm()
    if len(lengths) % len(prompts):
        raise ValueError(f"{len(lengths)} lengths is not a whole number of samples for {len(prompts)} prompts")
    per_prompt = len(lengths) // len(prompts)
    requests = []
    for i, p in enumerate(prompts):
        request: dict[str, Any] = {"prompt_token_ids": [int(t) for t in np.asarray(p["input_ids"])]}
        if images is not None and images[i]:
            request["multi_modal_data"] = {"image": list(images[i])}
        requests.append(request)
    expanded = max(len(p.get("expanded_ids", p["input_ids"])) for p in prompts)
    llm = engine(model_dir, expanded + int(max(lengths)), tokenizer=tokenizer, max_num_seqs=max_num_seqs)
    params = SamplingParams(n=per_prompt, temperature=temperature, max_new_tokens=int(max(lengths)))
    keys = jax.random.split(jax.random.key(seed), len(lengths))
    seeds = request_seeds(np.asarray(jax.random.key_data(keys)))
    # no stop token and the model's EOS ignored: request i decodes exactly lengths[i] tokens (the bench's forced stop)
    sampling = [
        vllm_sampling_params(vllm, params, s, (), int(n), ignore_eos=True) for s, n in zip(seeds, lengths, strict=True)
    ]
    order, first = [], None
    began = time.perf_counter()
    for i, output in stream_requests(llm, [requests[i // per_prompt] for i in range(len(lengths))], sampling):
        order.append(finished_row(output, i, i // per_prompt, ()))
        first = time.perf_counter() - began if first is None else first
    wall = time.perf_counter() - began
    useful = sum(len(row.tokens) for row in order)
    if useful != int(sum(lengths)) or any(len(row.tokens) != lengths[row.row] for row in order):
        raise RuntimeError(f"vLLM decoded {useful} tokens, {int(sum(lengths))} were asked for")
    return {"engine": "vllm", "useful_tokens": useful, "wall_s": wall, "useful_tokens_per_s": useful / wall,
            "first_row_s": first, "requests": len(lengths), "longest": int(max(lengths))}  # fmt: skip


# ---- the bench model's tokenizer and processor (worker side) ---------------------------------------------------


def write_bench_processor(directory: str | os.PathLike, config: dict[str, Any], image_side: int) -> str:
    """Tokenizer + processor files for the bench's small Qwen2.5-VL (`config`: its config.json): Qwen's special-token
    names at the config's ids, placeholder words elsewhere; images of `image_side` pixels keep their size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from vinci_jax.processing import QwenProcessor
    from vinci_jax.processing.image_processor import ImageProcessor

    vocab_size = int(config.get("text_config", config).get("vocab_size") or config["vocab_size"])
    top = vocab_size - 1
    special = {"<|image_pad|>": config["image_token_id"], "<|video_pad|>": config["video_token_id"],
               "<|vision_start|>": config["vision_start_token_id"], "<|vision_end|>": config["vision_end_token_id"],
               "<|im_start|>": top - 2, "<|im_end|>": top - 1, "<|endoftext|>": top}  # fmt: skip
    by_id = {int(i): name for name, i in special.items()}
    vocab = {by_id.get(i, f"w{i}"): i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=list(special))  # fmt: skip
    pixels = image_side * image_side
    QwenProcessor(fast, ImageProcessor(min_pixels=pixels, max_pixels=pixels)).save_pretrained(directory)
    return str(directory)


def bench_engine_dir(model_dir: str | os.PathLike, image_side: int) -> Path:
    """A temp dir with the bench model's files (linked) and `write_bench_processor`'s: vLLM reads its processor
    from the model dir."""
    engine_dir = Path(tempfile.mkdtemp(prefix="vllm_bench_model_"))
    for item in Path(model_dir).iterdir():
        (engine_dir / item.name).symlink_to(item.resolve())
    config = json.loads((engine_dir / "config.json").read_text())
    write_bench_processor(engine_dir, config, image_side)
    return engine_dir


def _worker_prompts(setup: dict[str, Any]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """The bench's prompts in vLLM's form (one pad per image) and one random image per grid."""
    from PIL import Image

    from vinci_jax.sampling.vllm_inputs import collapse_image_pads

    rng = np.random.default_rng(0)
    prompts, images = [], []
    for p in setup["prompts"]:
        grids = np.asarray(p["image_grid_thw"], np.int64).reshape(-1, 3)
        ids = collapse_image_pads(p["input_ids"], setup["image_token_id"], grids, setup["merge_size"])
        prompts.append({"input_ids": ids, "expanded_ids": p["input_ids"]})
        images.append([Image.fromarray(rng.integers(0, 256, (int(g[1]) * 14, int(g[2]) * 14, 3), np.uint8))
                       for g in grids])  # fmt: skip
    return prompts, images


def serve(stdin: Any = None, stdout: Any = None) -> None:
    """The worker loop: one JSON request per line (setup, round, close), one marked JSON reply per request."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    state: dict[str, Any] = {}
    for line in stdin:
        request = json.loads(line)
        try:
            if request["op"] == "setup":
                engine_dir = bench_engine_dir(request["model_dir"], request["image_side"])
                config = json.loads((engine_dir / "config.json").read_text())
                state.update(request, model_dir=str(engine_dir), tokenizer=str(engine_dir),
                             image_token_id=config["image_token_id"])  # fmt: skip
                state["vllm_prompts"], state["images"] = _worker_prompts(state)
                reply: dict[str, Any] = {"ok": True}
            elif request["op"] == "round":
                reply = vllm_round(state["model_dir"], state["vllm_prompts"], state["lengths"],
                                   tokenizer=state["tokenizer"], images=state["images"], seed=int(request["seed"]),
                                   max_num_seqs=int(state["max_num_seqs"]))  # fmt: skip
            elif request["op"] == "close":
                stdout.write(REPLY + json.dumps({"ok": True}) + "\n")
                stdout.flush()
                return
            else:
                raise ValueError(f"unknown op {request['op']!r}")
        except Exception as err:  # reported to the bench process, which raises it there
            reply = {"error": f"{type(err).__name__}: {err}"}
        stdout.write(REPLY + json.dumps(reply) + "\n")
        stdout.flush()


# ---- the bench process's side ----------------------------------------------------------------------------------


def vllm_python() -> Path:
    """The vLLM venv's interpreter ($VINCI_JAX_VLLM_PYTHON, else this checkout's .venv-vllm)."""
    path = Path(os.environ.get("VINCI_JAX_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")
    if not path.exists():
        raise FileNotFoundError(f"no vLLM venv python at {path}: build it with `make setup-vllm`, or set "
                                "VINCI_JAX_VLLM_PYTHON; or leave vllm out of --engines")  # fmt: skip
    return path


class VllmWorker:
    """A .venv-vllm process running `serve`; its log (vLLM's) goes to a temp file quoted on failure."""

    def __init__(self, python: Path | None = None):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS", "VIRTUAL_ENV")}
        env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'data'}", JAX_PLATFORMS="cpu")
        self.log = tempfile.NamedTemporaryFile("w+", prefix="vllm_worker_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(python or vllm_python()), "-m", "vinci_jax.bench.rollout_vllm", "--worker"], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )  # fmt: skip

    def call(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                reply = json.loads(line[len(REPLY) :])
                if "error" in reply:
                    raise RuntimeError(f"vLLM worker: {reply['error']} (log: {self.log.name})")
                return reply
        self.log.flush()
        tail = Path(self.log.name).read_text()[-3000:]
        raise RuntimeError(f"vLLM worker exited ({self.proc.wait()}) during {request['op']}; log tail:\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="close")
                self.proc.wait(timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()


def contender(setup: Any) -> Callable[[], float]:
    """The rollout bench's `vllm` contender over its RolloutSetup (model_dir, prompts, limits, args.n): one round
    per call, returning the slot utilisation (1: vLLM computes no slot for a finished row)."""
    import atexit

    worker = VllmWorker()
    atexit.register(worker.close)
    grids = [np.asarray(p["image_grid_thw"]).reshape(-1, 3) for p in setup.prompts]
    sides = {int(g[1]) * 14 for gs in grids for g in gs} | {int(g[2]) * 14 for gs in grids for g in gs}
    if len(sides) != 1:
        raise ValueError(f"the vLLM contender takes square images of one size; the bench's grids are {grids}")
    worker.call(
        op="setup", model_dir=str(setup.model_dir), image_side=sides.pop(), merge_size=2,
        prompts=[{"input_ids": np.asarray(p["input_ids"]).tolist(),
                  "image_grid_thw": np.asarray(p["image_grid_thw"]).tolist()} for p in setup.prompts],
        lengths=[int(n) for n in setup.limits], max_num_seqs=max(64, int(setup.limits.shape[0])),
    )  # fmt: skip
    rounds = iter(range(10**6))

    def run() -> float:
        reply = worker.call(op="round", seed=next(rounds))
        if int(reply["useful_tokens"]) != int(setup.limits.sum()):
            raise RuntimeError(f"vLLM decoded {reply['useful_tokens']} tokens, {int(setup.limits.sum())} asked for")
        setup.stats["vllm"] = {"worker_wall_s": reply["wall_s"], "first_row_s": reply["first_row_s"],
                               "python": str(vllm_python())}  # fmt: skip
        return 1.0

    return run


def long_tailed_lengths(count: int, median: int = 64, cap: int = 512, sigma: float = 1.0, seed: int = 0) -> list[int]:
    """Response lengths from a lognormal with this median, capped (the issue's batch)."""
    rng = np.random.default_rng(seed)
    return [int(min(cap, max(1, round(x)))) for x in rng.lognormal(np.log(median), sigma, count)]


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.bench rollout_vllm", description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help="serve the rollout bench's vllm contender on stdin")
    parser.add_argument("--model_dir", help="HF Qwen2.5-VL / Qwen3-VL dir (config.json + weights + tokenizer)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--prompt_len", type=int, default=64)
    parser.add_argument("--median", type=int, default=64)
    parser.add_argument("--cap", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.worker:
        serve()
        return None
    if not args.model_dir:
        parser.error("--model_dir is required (or --worker)")
    rng = np.random.default_rng(0)
    prompts = [{"input_ids": rng.integers(2, 1000, args.prompt_len)} for _ in range(args.prompts)]
    lengths = long_tailed_lengths(args.prompts * args.samples, args.median, args.cap)
    vllm_round(args.model_dir, prompts, lengths[: args.prompts])  # warm-up: engine start and first compile
    rounds = [vllm_round(args.model_dir, prompts, lengths, seed=r) for r in range(args.rounds)]
    return {
        "engine": "vllm",
        "useful_tokens": rounds[0]["useful_tokens"],
        "median_wall_s": statistics.median(r["wall_s"] for r in rounds),
        "median_useful_tokens_per_s": statistics.median(r["useful_tokens_per_s"] for r in rounds),
        "rounds": len(rounds),
        "load_average": list(os.getloadavg()),
    }


if __name__ == "__main__":
    result = main()
    if result is not None:
        print(json.dumps(result))
