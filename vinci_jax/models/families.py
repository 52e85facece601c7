"""Model families: everything that differs between Qwen2.5-VL and Qwen3-VL, behind one small registry.

Training, sampling and the HF tools ask the family for what they need instead of importing a model package, so
`--config.model.family=qwen3_vl` (or a checkpoint's config.json `model_type`) is all a user changes:

    family = resolve_family(name="", hf_dir="/ckpt/Qwen3-VL-8B-Instruct")   # or get_family("qwen3_vl")
    config = family.read_config(hf_dir)           # or family.preset("8b") / family.config_from_hf(dict)
    model = family.build(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32, remat_policy="full")
    model = family.load(hf_dir, mesh=mesh, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    family.export(model, out_dir, dtype="bfloat16", source_dir=hf_dir)
    positions, deltas = family.get_rope_index(input_ids, image_grid_thw, attention_mask, config=config)
    vision_inputs = family.prepare_vision_inputs(image_grid_thw, pixel_values, config.vision, **layout)
    vision_inputs = family.prepare_vision_rows(image_grid_thw, pixel_values, config.vision)  # many prompts' images
    processor = family.processor(hf_dir_or_None) ; family.processor_with(tokenizer, min_pixels=.., max_pixels=..)
    family, config = from_model_config(config.model)   # a run's model block: family / preset / hf_dir

Both families share the model call signatures (`__call__`, `hidden_states`, `compute_logits`, `init_cache`,
`forward_with_cache`), the KV cache, the host-side `VisionInputs` layout, the loader and the processor outputs.
Implementations are imported lazily (by dotted name), so importing this module pulls in neither family.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vinci_jax.paths import as_path


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """One model family: names of its implementations (`module:attribute`) and the helpers built on them."""

    name: str  # the value of --config.model.family
    model_type: str  # config.json "model_type"
    config_class_path: str
    model_class_path: str
    hf_module_path: str  # module with rules / load / export / write_hf_dir / abstract_model / read_config
    hf_prefix: str  # `{prefix}_rules`, `load_{prefix}`, `export_{prefix}` in that module
    rope_index_path: str
    processor_class_path: str
    image_processor_path: str  # zero-argument factory (keyword overrides allowed) of the default ImageProcessor
    # parameter-path regexes ('/'-separated NNX paths) of the trainers' freeze groups: the vision tower without its
    # mergers (ms-swift's "vit"), and the mergers that project into the text width (its "aligner")
    freeze_groups: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"vision": r"^visual/(?!merger/)", "merger": r"^visual/merger/"}
    )
    prepare_vision_inputs_path: str = "vinci_jax.models.vision_inputs:prepare_vision_inputs"
    prepare_vision_rows_path: str = "vinci_jax.models.vision_inputs:prepare_vision_rows"

    # -- classes --
    @property
    def config_class(self) -> type:
        return _resolve(self.config_class_path)

    @property
    def model_class(self) -> type:
        return _resolve(self.model_class_path)

    def _hf(self, attr: str) -> Any:
        return _resolve(f"{self.hf_module_path}:{attr}")

    # -- configs --
    @property
    def presets(self) -> tuple[str, ...]:
        """The size preset names (the config class's `sizes` table)."""
        return tuple(self.config_class.sizes)

    def config_from_hf(self, config_json: Mapping[str, Any]) -> Any:
        return self.config_class.from_hf(config_json)

    def read_config(self, hf_dir: str | os.PathLike) -> Any:
        return self._hf("read_config")(hf_dir)

    def preset(self, name: str) -> Any:
        """A size preset by name (see `presets`); also accepts `<model_type>_<size>` names like `qwen3_vl_8b`."""
        return self.config_class.preset(name)

    def owns_config(self, config: Any) -> bool:
        return isinstance(config, self.config_class)

    # -- models --
    def build(
        self,
        config: Any,
        *,
        rngs: Any,
        dtype: Any = None,
        param_dtype: Any = None,
        remat_policy: str = "none",
        attention: str = "auto",
        scan_layers: bool = False,
    ) -> Any:
        """A randomly initialised model (remat_policy: none | full | dots | dots_no_batch, per decoder layer and
        vision block; attention: auto | xla | splash | cudnn, see `vinci_jax.models.attention`; scan_layers: each
        layer stack as one scanned body, see `vinci_jax.models.layers.scan_layers`)."""
        import jax.numpy as jnp

        dtype = jnp.float32 if dtype is None else dtype
        param_dtype = dtype if param_dtype is None else param_dtype
        return self.model_class(
            config,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            remat_policy=remat_policy,
            attention=attention,
            scan_layers=scan_layers,
        )

    def abstract_model(self, config: Any, dtype: Any = None, param_dtype: Any = None) -> Any:
        import jax.numpy as jnp

        return self._hf("abstract_model")(config, jnp.float32 if dtype is None else dtype, param_dtype)

    # -- Hugging Face --
    def rules(self, config: Any) -> list[Any]:
        return self._hf(f"{self.hf_prefix}_rules")(config)

    def load(self, hf_dir: str | os.PathLike, **kwargs: Any) -> Any:
        """kwargs: mesh=, dtype=, param_dtype=, config= (see the family's `load_*`)."""
        return self._hf(f"load_{self.hf_prefix}")(hf_dir, **kwargs)

    def export(self, model: Any, out_dir: str | os.PathLike, **kwargs: Any) -> Path:
        """kwargs: config= (needed for an nnx.State), dtype=, source_dir=, max_shard_bytes=."""
        return self._hf(f"export_{self.hf_prefix}")(model, out_dir, **kwargs)

    def write_hf_dir(self, tensors: Any, config: Any, out_dir: str | os.PathLike, **kwargs: Any) -> Path:
        return self._hf("write_hf_dir")(tensors, config, out_dir, **kwargs)

    # -- host-side inputs --
    def get_rope_index(
        self,
        input_ids: np.ndarray,
        image_grid_thw: np.ndarray | None = None,
        attention_mask: np.ndarray | None = None,
        *,
        config: Any,
        segment_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """3-D positions [3, B, L] and deltas [B, 1] with the ids and merge size taken from the model config."""
        return _resolve(self.rope_index_path)(
            input_ids,
            image_grid_thw,
            attention_mask,
            image_token_id=config.image_token_id,
            video_token_id=config.video_token_id,
            spatial_merge_size=config.vision.spatial_merge_size,
            segment_ids=segment_ids,
        )

    def prepare_vision_inputs(
        self, image_grid_thw: np.ndarray, pixel_values: np.ndarray, vision_config: Any, **layout: Any
    ) -> Any:
        """Bucket-padded `VisionInputs` (layout: bucket_sizes=, row_patches=, row_buckets=)."""
        return _resolve(self.prepare_vision_inputs_path)(image_grid_thw, pixel_values, vision_config, **layout)

    def prepare_vision_rows(
        self, image_grid_thw: np.ndarray, pixel_values: np.ndarray, vision_config: Any, **layout: Any
    ) -> Any:
        """`VisionInputs` for the images of many prompts: rows sized by the largest image, each frame its own
        segment (layout: row_lengths=, row_buckets=); what sampling and the GRPO update use."""
        return _resolve(self.prepare_vision_rows_path)(image_grid_thw, pixel_values, vision_config, **layout)

    # -- processing --
    @property
    def processor_class(self) -> type:
        return _resolve(self.processor_class_path)

    def processor(self, directory: str | os.PathLike | None = None) -> Any:
        """The processor of a checkpoint dir (its tokenizer + preprocessor config) or this family's defaults."""
        return self.processor_class.from_pretrained(directory)

    def image_processor(self, **overrides: Any) -> Any:
        """The family's default ImageProcessor, with e.g. min_pixels= / max_pixels= replaced."""
        base = _resolve(self.image_processor_path)()
        return dataclasses.replace(base, **overrides) if overrides else base

    def processor_with(self, tokenizer: Any = None, **image_overrides: Any) -> Any:
        """This family's processor around `tokenizer` (default: the family's offline tokenizer) and its image processor
        with `image_overrides` (e.g. the data config's min_pixels / max_pixels)."""
        if tokenizer is None:  # the family's own offline tokenizer (Qwen3-VL adds tokens to Qwen2.5's)
            tokenizer = self.processor_class.default_tokenizer()
        return self.processor_class(tokenizer, self.image_processor(**image_overrides))


def _qwen25_image_processor() -> Any:
    from vinci_jax.processing import ImageProcessor

    return ImageProcessor()


FAMILIES: dict[str, ModelFamily] = {
    "qwen2_5_vl": ModelFamily(
        name="qwen2_5_vl",
        model_type="qwen2_5_vl",
        config_class_path="vinci_jax.models.qwen2_5_vl.config:Qwen25VLConfig",
        model_class_path="vinci_jax.models.qwen2_5_vl.modeling:Qwen25VLForConditionalGeneration",
        hf_module_path="vinci_jax.hf.qwen2_5_vl",
        hf_prefix="qwen2_5_vl",
        rope_index_path="vinci_jax.models.qwen2_5_vl.rope_index:get_rope_index",
        processor_class_path="vinci_jax.processing.processor:QwenProcessor",
        image_processor_path="vinci_jax.models.families:_qwen25_image_processor",
    ),
    "qwen3_vl": ModelFamily(
        name="qwen3_vl",
        model_type="qwen3_vl",
        config_class_path="vinci_jax.models.qwen3_vl.config:Qwen3VLConfig",
        model_class_path="vinci_jax.models.qwen3_vl.modeling:Qwen3VLForConditionalGeneration",
        hf_module_path="vinci_jax.hf.qwen3_vl",
        hf_prefix="qwen3_vl",
        rope_index_path="vinci_jax.models.qwen3_vl.rope_index:get_rope_index",
        processor_class_path="vinci_jax.processing.qwen3_vl:Qwen3VLProcessor",
        image_processor_path="vinci_jax.processing.qwen3_vl:qwen3_vl_image_processor",
        freeze_groups={
            "vision": r"^visual/(?!merger/|deepstack_merger_list/)",
            "merger": r"^visual/(merger|deepstack_merger_list)/",
        },
    ),
}
DEFAULT_FAMILY = "qwen2_5_vl"


def family_names() -> Sequence[str]:
    return tuple(FAMILIES)


def get_family(name: str) -> ModelFamily:
    """A family by its name (`qwen2_5_vl`, `qwen3_vl`); also accepts config.json model_type spellings."""
    key = name.strip().lower().replace("-", "_").replace(".", "_")
    for family in FAMILIES.values():
        if key in (family.name, family.model_type):
            return family
    raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")


def family_of_model_type(model_type: str) -> ModelFamily:
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise ValueError(
        f"config.json model_type {model_type!r} is not a supported family; supported: "
        f"{sorted(f.model_type for f in FAMILIES.values())}"
    )


def family_of_hf_dir(hf_dir: str | os.PathLike) -> ModelFamily:
    """The family a checkpoint dir (or a dir holding an HF-style config.json) belongs to, by its model_type."""
    path = as_path(hf_dir) / "config.json"  # gs:// too
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; point at an HF checkpoint dir (it needs config.json)")
    model_type = json.loads(path.read_text()).get("model_type")
    if not model_type:
        raise ValueError(f"{path} has no model_type; expected one of {sorted(f.model_type for f in FAMILIES.values())}")
    return family_of_model_type(model_type)


def family_of_config(config: Any) -> ModelFamily:
    """The family whose config class `config` is an instance of."""
    for family in FAMILIES.values():
        if family.owns_config(config):
            return family
    raise TypeError(f"{type(config).__name__} is not the config of a registered model family ({sorted(FAMILIES)})")


def family_of_model(model: Any) -> ModelFamily:
    return family_of_config(model.config)


def from_model_config(model: Mapping[str, Any]) -> tuple[ModelFamily, Any]:
    """(family, model config) for a run's `config.model` block: `hf_dir` (its config.json decides the family and
    the shapes), else `family` (default qwen2_5_vl) with its size `preset` (e.g. "tiny", "8b", "qwen3_vl_8b")."""
    hf_dir = model.get("hf_dir") or None
    family = resolve_family(model.get("family") or "", hf_dir)
    if hf_dir:
        return family, family.read_config(hf_dir)
    return family, family.preset(str(model.get("preset") or "tiny"))


def resolve_family(name: str | None = "", hf_dir: str | os.PathLike | None = None) -> ModelFamily:
    """The family for a run: from `hf_dir`'s config.json when given (an explicit `name` must then agree), else by
    `name`, else the default (qwen2_5_vl)."""
    from_dir = family_of_hf_dir(hf_dir) if hf_dir else None
    if name:
        chosen = get_family(name)
        if from_dir is not None and from_dir is not chosen:
            raise ValueError(
                f"model.family={name!r} but {hf_dir}/config.json is a {from_dir.model_type!r} checkpoint; "
                f"drop model.family or set it to {from_dir.name!r}"
            )
        return chosen
    return from_dir or FAMILIES[DEFAULT_FAMILY]
