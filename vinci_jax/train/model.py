"""Build the policy model for training from `config.model`: random init from a preset (created directly on its
shardings, never as a full host copy) or weights from an HF directory.

The model family (Qwen2.5-VL or Qwen3-VL, `vinci_jax.models.families`) comes from `model.family` or the config.json
of `model.hf_dir` / `model.init_from`; everything else here is family-agnostic.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh

from vinci_jax import sharding
from vinci_jax.models import families
from vinci_jax.models.families import ModelFamily
from vinci_jax.paths import as_path, is_remote, local_copy, local_dir_for


def _dtype(name: str) -> Any:
    return jnp.dtype(name)


def _config_source(config: ml_collections.ConfigDict) -> Any:
    """The directory whose config.json describes the model: `hf_dir`, else the checkpoint `init_from` names (an HF
    dir or a training workdir, which the trainers write a config.json into), else None (family + preset)."""
    from vinci_jax.policy import checkpoint_config_dir

    return config.get("hf_dir") or checkpoint_config_dir(config.get("init_from") or None)


def model_family(config: ml_collections.ConfigDict) -> ModelFamily:
    """The `ModelFamily` of a run's model block; `family` must agree with a config.json when both are given. A block
    without a `family` key (older configs) means Qwen2.5-VL unless a config.json says otherwise."""
    return families.resolve_family(config.get("family", "") or "", _config_source(config))


def resolve_model(config: ml_collections.ConfigDict) -> tuple[ModelFamily, Any]:
    """(family, model config) of a run's model block: from the config.json of `_config_source`, else the family's
    size `preset` (e.g. "tiny", "8b", "qwen3_vl_8b"); an optional `num_layers` > 0 keeps only that many decoder
    layers."""
    source = _config_source(config)
    family = model_family(config)
    model_config = family.read_config(source) if source else family.preset(str(config.get("preset") or "tiny"))
    layers = int(config.get("num_layers", 0) or 0)  # a shallower copy (vinci_jax.aot extrapolates from it)
    if layers:
        text = dataclasses.replace(model_config.text, num_hidden_layers=layers)
        model_config = dataclasses.replace(model_config, text=text)
    return family, model_config


def model_processor(config: ml_collections.ConfigDict, **image_overrides: Any) -> Any:
    """The processor of a run's model block: the tokenizer saved with `hf_dir` / `init_from` when that directory has
    one (a model with its own vocabulary, e.g. the demo's), else the family's offline tokenizer; with image_overrides
    (min_pixels= / max_pixels=)."""
    from vinci_jax.policy import load_processor

    family, source = model_family(config), _config_source(config)
    tokenizer = None
    if source is not None and (as_path(source) / "tokenizer.json").is_file():
        tokenizer = load_processor(source, family).tokenizer
    return family.processor_with(tokenizer, **image_overrides)


def _constructor(
    config: ml_collections.ConfigDict,
) -> tuple[ModelFamily | None, Any, Callable[[nnx.Rngs], nnx.Module]]:
    """(family, model config, constructor); family and model config are None for the trainer's stand-in model."""
    dtype, param_dtype, remat = _dtype(config.dtype), _dtype(config.param_dtype), config.remat
    attention = config.get("attention", "auto")  # older configs have no attention knob
    scan = bool(config.get("scan_layers", False))  # nor a layer-scan knob
    if config.preset == "standin" and not config.hf_dir:
        from vinci_jax.train.standin import StandInConfig, StandInTextLM

        def standin(rngs: nnx.Rngs) -> nnx.Module:
            return StandInTextLM(
                StandInConfig.tiny(), rngs=rngs, dtype=dtype, param_dtype=param_dtype, remat_policy=remat
            )

        return None, None, standin
    family, model_config = resolve_model(config)

    def build(rngs: nnx.Rngs) -> nnx.Module:
        return family.build(
            model_config,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            remat_policy=remat,
            attention=attention,
            scan_layers=scan,
        )

    return family, model_config, build


class ModelFactory:
    """How to make the model of `config.model`: abstractly (shapes + shardings, no memory), its non-parameter
    variables, and its parameters (random init compiled with output shardings, or streamed from an HF directory).

    Parameters are only materialised when a run does not resume from a checkpoint, so resuming a 7B run never pays
    for a random init it would throw away.
    """

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, seed: int):
        self.config, self.mesh, self.seed = config, mesh, seed
        self.family, self.model_config, self.constructor = _constructor(config)
        self.abstract = nnx.eval_shape(lambda: self.constructor(nnx.Rngs(seed)))

    @property
    def freeze_groups(self) -> dict[str, str] | None:
        """The family's freeze-group regexes (None for the stand-in: `freeze_patterns` then uses the default)."""
        return None if self.family is None else dict(self.family.freeze_groups)

    def processor(self, **image_overrides: Any) -> Any:
        """The model's processor (`model_processor`) with e.g. min_pixels= / max_pixels=; None for the stand-in
        model."""
        if self.family is None:
            return None
        return model_processor(self.config, **image_overrides)

    def abstract_split(self) -> tuple[Any, nnx.State, nnx.State]:
        """(graphdef, abstract Param state with logical-axis metadata, abstract other variables)."""
        return nnx.split(self.abstract, nnx.Param, ...)

    def _jit_init(self, select: Callable[[nnx.Module], Any]) -> Any:
        """Run the constructor under jit and keep only `select(model)`; XLA drops the init work of the rest."""
        shardings = sharding.state_shardings(select(self.abstract), self.mesh)

        def init() -> Any:
            return select(self.constructor(nnx.Rngs(self.seed)))

        with jax.set_mesh(self.mesh):
            return jax.jit(init, out_shardings=shardings)()

    def rest(self) -> nnx.State:
        """Non-parameter variables (buffers), which checkpoints do not store. None in the Qwen models: then nothing
        runs, so a mesh of devices that only compile (vinci_jax.aot's TPU topologies) works too."""
        rest = nnx.state(self.abstract, nnx.Not(nnx.Param))
        if not jax.tree.leaves(rest):
            return rest
        return self._jit_init(lambda m: nnx.state(m, nnx.Not(nnx.Param)))

    def params(self) -> dict[str, Any]:
        """Parameters as a pure dict on their shardings."""
        if self.config.hf_dir:
            model = self._load_hf()
            return nnx.state(model, nnx.Param).to_pure_dict()
        return self._jit_init(lambda m: nnx.state(m, nnx.Param)).to_pure_dict()

    def _load_hf(self) -> nnx.Module:
        config = self.config
        return self.family.load(
            local_copy(config.hf_dir),  # a gs:// HF dir is downloaded once
            mesh=self.mesh,
            dtype=_dtype(config.dtype),
            param_dtype=_dtype(config.param_dtype),
            config=self.model_config,
            remat_policy=config.remat,
        )


def write_model_files(workdir: str | os.PathLike, model_config: Any, processor: Any = None) -> None:
    """Write the model's HF config.json (and the processor's tokenizer/preprocessor files) into a run's workdir.

    With them the workdir is self-describing: `python -m vinci_jax.hf export WORKDIR OUT`, `generate --model` and
    ViRL's `init_from` find the family, the shapes and the tokenizer without the user writing config.json. Only
    process 0 writes; every file is replaced atomically, so a reader never sees half a file. Models without an HF
    config (the stand-in) write nothing.
    """
    if jax.process_index() != 0 or not hasattr(model_config, "to_hf"):
        return
    if is_remote(workdir):  # each uploaded object replaces its predecessor whole
        with local_dir_for(workdir) as staging:
            _write_model_files_into(staging, model_config, processor)
        return
    workdir = as_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    staging = workdir / f".model_files.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _write_model_files_into(os.fspath(staging), model_config, processor)
        for path in sorted(staging.iterdir()):
            os.replace(path, workdir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_model_files_into(directory: str, model_config: Any, processor: Any) -> None:
    if processor is not None:
        processor.save_pretrained(directory)
    with open(os.path.join(directory, "config.json"), "w") as f:
        f.write(json.dumps(model_config.to_hf(), indent=2, sort_keys=True) + "\n")
