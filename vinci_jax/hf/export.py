"""Export a Qwen2.5-VL or Qwen3-VL checkpoint (Orbax or HF) to a Hugging Face directory (family by model_type).

Orbax layouts accepted as SRC (the model's `nnx.state(...)` saved by `ocp.StandardCheckpointer` or by an
`ocp.CheckpointManager` item, with the model's HF-style `config.json` (`config.to_hf()`) beside it):

    SRC/                      a StandardCheckpointer dir (has _METADATA), config.json in SRC or its parent
    SRC/<step>/<item>/        a CheckpointManager root: the latest step is used (or `step=`); config.json in
                              SRC/<step>/<item>, SRC/<step> or SRC
    SRC/<item>/               one step of a CheckpointManager
    SRC/checkpoints/<step>/.. a training WORKDIR (vinci_jax.train layout: items `state` + `data_iter`, where
                              state = {"params": ..., "opt_state": ..., "step": ...}); config.json in SRC (the
                              SFT and ViRL trainers write it there, with the processor files)

When a step holds several items (e.g. `model` and `opt_state`), or an item holds a larger tree (e.g.
`{"params": state, "opt_state": ...}`), the subtree whose paths the Qwen2.5-VL table maps best is exported
(optimizer moments mirror the parameter paths, so ties go to the shortest prefix, then to items named
model/params/state). Only that subtree is read from disk (partial restore, as host numpy arrays), and only
parameters are written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx

from vinci_jax.hf.loader import CheckpointMismatch, Rule, iter_hf_tensors, path_str
from vinci_jax.models.families import family_of_config, family_of_hf_dir, family_of_model_type
from vinci_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from vinci_jax.paths import as_path, is_remote, local_copy, local_dir_for

PREFERRED_ITEMS = ("model", "params", "state", "default")


def _is_orbax_item(path: epath.Path) -> bool:
    return (path / "_METADATA").is_file()


def _latest_step(root: epath.Path) -> epath.Path | None:
    steps = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps, key=lambda p: int(p.name)) if steps else None


def _workdir_of(step_dir: epath.Path) -> list[epath.Path]:
    """[WORKDIR] when `step_dir` is WORKDIR/checkpoints/<step> (the trainers' layout; config.json lives in WORKDIR)."""
    return [step_dir.parent.parent] if step_dir.parent.name == "checkpoints" else []


def _orbax_items(src: epath.Path, step: int | None) -> tuple[list[epath.Path], list[epath.Path]]:
    """(candidate item dirs, dirs to look for config.json in, innermost first)."""
    if _is_orbax_item(src):
        return [src], [src, src.parent, *_workdir_of(src.parent)]
    step_dir = src / str(step) if step is not None else _latest_step(src)
    if step_dir is None or not step_dir.is_dir():
        step_dir = src  # SRC is one step
    items = [p for p in sorted(step_dir.iterdir()) if p.is_dir() and _is_orbax_item(p)]
    return items, list(dict.fromkeys([step_dir, src, src.parent, *_workdir_of(step_dir)]))


def _leaf_name(path: Any) -> str:
    keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    if keys and keys[-1] == "value":  # nnx.Variable leaves are saved as {"value": array}
        keys = keys[:-1]
    return ".".join(keys)


def _flat_tree(tree: Any) -> dict[str, Any]:
    return {_leaf_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _best_prefix(paths: list[str], rules: list[Rule]) -> tuple[int, str]:
    """(number of parameters the table maps, prefix) for the best-covered subtree of these paths."""
    counts: dict[str, int] = {}
    for path in paths:
        parts = path.split(".")
        for k in range(len(parts)):
            if any(rule.match_nnx(".".join(parts[k:])) for rule in rules):
                prefix = ".".join(parts[:k])
                counts[prefix] = counts.get(prefix, 0) + 1
                break
    if not counts:
        return 0, ""
    best = max(counts.values())
    return best, min((p for p, n in counts.items() if n == best), key=len)


def _only_subtree(tree: Any, parts: list[str]) -> Any:
    """`tree` cut down to the branch at `parts` (so only the parameters are read, not optimizer moments).

    Falls back to the whole tree when the branch passes through a non-dict container.
    """
    node = tree
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return tree
        node = node[part]
    for part in reversed(parts):
        node = {part: node}
    return node


def _item_tree_metadata(item: epath.Path) -> Any:
    import orbax.checkpoint as ocp

    meta = ocp.PyTreeCheckpointer().metadata(item)
    return getattr(getattr(meta, "item_metadata", None), "tree", None) or meta


def _orbax_root(src: str | os.PathLike) -> epath.Path:
    root = as_path(src)
    if (root / "checkpoints").is_dir() and not _is_orbax_item(root):
        root = root / "checkpoints"  # a training WORKDIR
    return root


def orbax_config_dir(src: str | os.PathLike, step: int | None = None) -> epath.Path | None:
    """The directory holding the config.json of an Orbax checkpoint (see the module docstring), or None.

    The trainers write config.json and the processor files into their WORKDIR, so for a training checkpoint this is
    also where its tokenizer lives."""
    items, config_dirs = _orbax_items(_orbax_root(src), step)
    return next((d for d in [*items, *config_dirs] if (d / "config.json").is_file()), None)


def orbax_model_config(src: str | os.PathLike, step: int | None = None) -> Qwen25VLConfig:
    """The model config of an Orbax checkpoint, from the config.json beside it (see `orbax_config_dir`)."""
    config_dir = orbax_config_dir(_orbax_root(src), step)
    if config_dir is None:
        raise FileNotFoundError(
            f"no config.json next to the Orbax checkpoint {_orbax_root(src)}; write the model config's to_hf() there "
            "(the SFT and ViRL trainers write it into their workdir)"
        )
    config_json = json.loads((config_dir / "config.json").read_text())
    return family_of_model_type(config_json.get("model_type", "qwen2_5_vl")).config_from_hf(config_json)


def restore_orbax_params(
    src: str | os.PathLike,
    config: Qwen25VLConfig | None = None,
    *,
    step: int | None = None,
    shardings: Mapping[str, jax.sharding.Sharding] | None = None,
    dtypes: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], Qwen25VLConfig]:
    """Flat {NNX path: array} of the model parameters in an Orbax checkpoint, and its config.

    Host numpy arrays by default. With `shardings` ({NNX path: sharding}), those parameters are restored by Orbax
    straight into their target shardings (each device reads only its shard; nothing passes through one device),
    cast to `dtypes[path]` when given.
    """
    import orbax.checkpoint as ocp

    root = _orbax_root(src)
    items, _ = _orbax_items(root, step)
    if not items:
        raise FileNotFoundError(f"{root} holds no Orbax checkpoint (no _METADATA in it, its steps or items)")
    if config is None:
        config = orbax_model_config(root, step)
    family = family_of_config(config)  # Qwen2.5-VL or Qwen3-VL
    rules = family.rules(config)

    ranked = []
    for item in items:
        count, prefix = _best_prefix(list(_flat_tree(_item_tree_metadata(item))), rules)
        preference = PREFERRED_ITEMS.index(item.name) if item.name in PREFERRED_ITEMS else len(PREFERRED_ITEMS)
        ranked.append((-count, len(prefix), preference, item.name, item, prefix))
    _, _, _, _, item, prefix = min(ranked)

    target = _only_subtree(_item_tree_metadata(item), prefix.split(".") if prefix else [])
    start = f"{prefix}." if prefix else ""
    shardings, dtypes = shardings or {}, dtypes or {}

    def restore_arg(path: Any, _: Any) -> Any:
        name = _leaf_name(path)
        name = name[len(start) :] if name.startswith(start) else None
        if name in shardings:
            return ocp.ArrayRestoreArgs(sharding=shardings[name], dtype=dtypes.get(name))
        return ocp.RestoreArgs(restore_type=np.ndarray)

    restore_args = jax.tree_util.tree_map_with_path(restore_arg, target)
    tree = ocp.PyTreeCheckpointer().restore(
        item, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    )
    flat = {k[len(start) :]: v for k, v in _flat_tree(tree).items() if k.startswith(start)}

    # keep exactly the model's parameters, and check them against its shapes
    expected = {
        path_str(path): tuple(var.get_value().shape)
        for path, var in nnx.to_flat_state(nnx.state(family.abstract_model(config), nnx.Param))
    }
    params = {k: v for k, v in flat.items() if k in expected}
    missing = sorted(set(expected) - set(params))
    mis_shaped = [f"{k} {list(np.shape(v))}, model wants {list(expected[k])}" for k, v in params.items()
                  if tuple(np.shape(v)) != expected[k]]  # fmt: skip
    if missing or mis_shaped:
        raise CheckpointMismatch(f"{item} (subtree {prefix or '<root>'})", missing=missing, mis_shaped=mis_shaped)
    return params, config


def is_hf_dir(path: str | os.PathLike) -> bool:
    root = as_path(path)
    return (root / "config.json").is_file() and any(root.glob("*.safetensors"))


_SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float32"}


def hf_dir_dtype(path: str | os.PathLike) -> str:
    """The floating dtype of an HF dir's weights, read from its first safetensors header (no tensor is loaded)."""
    import struct

    for shard in sorted(as_path(path).glob("*.safetensors")):
        with shard.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name != "__metadata__" and entry.get("dtype") in _SAFETENSORS_DTYPES:
                return _SAFETENSORS_DTYPES[entry["dtype"]]
    return "float32"


def params_dtype(params: Mapping[str, Any]) -> str:
    """The floating dtype most parameters have (what an Orbax checkpoint was trained in)."""
    counts: dict[str, int] = {}
    for value in params.values():
        dtype = np.dtype(getattr(value, "dtype", np.float32))
        if dtype.kind == "f" or dtype.name == "bfloat16":
            counts[dtype.name] = counts.get(dtype.name, 0) + int(np.size(value))
    name = max(counts, key=counts.get) if counts else "float32"
    return name if name in ("bfloat16", "float16", "float32") else "float32"


def export(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: str | None = None,
    source_dir: str | os.PathLike | None = None,
    step: int | None = None,
    max_shard_bytes: int = 2**30,
) -> epath.Path:
    """SRC (HF dir or Orbax checkpoint, see module docstring) -> HF dir at OUT_DIR.

    Tokenizer/processor files are copied from `source_dir` (default: SRC itself when it is an HF dir; for an Orbax
    checkpoint the directory of its config.json when that holds a tokenizer, as a training WORKDIR does).
    `dtype` None keeps the source's dtype (an fp32 checkpoint stays fp32).
    """
    if is_remote(out_dir):  # safetensors and the processor write real files: stage them, then upload
        with local_dir_for(out_dir) as staging:
            export(src, staging, dtype=dtype, source_dir=source_dir, step=step, max_shard_bytes=max_shard_bytes)
        return as_path(out_dir)
    if is_hf_dir(src):
        src = local_copy(src)  # safetensors are memory-mapped from real files: a gs:// HF dir is downloaded once
        family = family_of_hf_dir(src)
        config = family.read_config(src)
        model = family.load(src, dtype=np.float32, config=config)
        dtype = dtype or hf_dir_dtype(src)
        return family.export(model, out_dir, dtype=dtype, source_dir=source_dir or src, max_shard_bytes=max_shard_bytes)
    params, config = restore_orbax_params(src, step=step)
    if source_dir is None:
        config_dir = orbax_config_dir(src, step)
        source_dir = config_dir if config_dir is not None and (config_dir / "tokenizer.json").is_file() else None
    family = family_of_config(config)
    dtype = dtype or params_dtype(params)
    tensors = iter_hf_tensors(params, family.rules(config))
    return family.write_hf_dir(
        tensors, config, out_dir, dtype=dtype, source_dir=source_dir, max_shard_bytes=max_shard_bytes
    )
