"""Stream Hugging Face safetensors into an NNX model (and back) through a table of name templates.

A model family provides a list of `Rule`s: an HF tensor name template and the NNX state path it fills, with the
same `{i}`-style integer placeholders on both sides, plus a `Transform` between the two layouts. The same table
drives loading (`load_model`) and export (`iter_hf_tensors` + `write_safetensors`), so the mapping lives in one
place and the model code never sees an HF name.

Loading never holds a host copy of the whole model: the target is an abstract model (`nnx.eval_shape`), every
tensor is planned and shape-checked first (all problems are reported together), then tensors are read one at a
time, transformed, cast and placed on the sharding their `logical_axes` metadata asks for.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding
from safetensors import safe_open
from safetensors.numpy import save_file

from vinci_jax import sharding

INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class Transform:
    """A layout change between an HF tensor and the NNX parameter it becomes (`to_hf` inverts `to_nnx`)."""

    to_nnx: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _conv_to_nnx(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (*range(2, x.ndim), 1, 0))


def _conv_to_hf(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (x.ndim - 1, x.ndim - 2, *range(x.ndim - 2)))


IDENTITY = Transform(lambda x: x, lambda x: x)
LINEAR = Transform(lambda x: x.T, lambda x: x.T)  # torch Linear [out, in] <-> NNX kernel [in, out]
CONV = Transform(_conv_to_nnx, _conv_to_hf)  # torch [O, I, (D,) H, W] <-> NNX [(D,) H, W, I, O]


_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


@functools.lru_cache(maxsize=4096)
def _template_regex(template: str) -> re.Pattern[str]:
    parts, last = [], 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(f"(?P<{match.group(1)}>\\d+)")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts) + r"\Z")


@dataclass(frozen=True)
class Rule:
    """One HF tensor name template <-> one NNX state path template (dotted, list indices as numbers)."""

    hf: str
    nnx: str
    transform: Transform = IDENTITY

    def __post_init__(self) -> None:
        if set(_PLACEHOLDER.findall(self.hf)) != set(_PLACEHOLDER.findall(self.nnx)):
            raise ValueError(f"rule {self.hf!r} <-> {self.nnx!r}: both sides need the same placeholders")

    def match_hf(self, name: str) -> str | None:
        """The NNX path this rule maps HF tensor `name` to, or None when it does not match."""
        found = _template_regex(self.hf).match(name)
        return None if found is None else self.nnx.format(**found.groupdict())

    def match_nnx(self, path: str) -> str | None:
        """The HF tensor name this rule maps NNX `path` to, or None when it does not match."""
        found = _template_regex(self.nnx).match(path)
        return None if found is None else self.hf.format(**found.groupdict())


class CheckpointMismatch(ValueError):
    """A checkpoint and a model disagree; the message lists every missing, unexpected and mis-shaped tensor."""

    def __init__(
        self,
        source: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mis_shaped: Sequence[str] = (),
    ):
        self.missing, self.unexpected, self.mis_shaped = list(missing), list(unexpected), list(mis_shaped)
        lines = [f"checkpoint {source} does not match the model:"]
        if self.missing:
            lines.append(f"  {len(self.missing)} model parameters have no tensor in the checkpoint:")
            lines += [f"    {name}" for name in self.missing]
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} checkpoint tensors map to no model parameter:")
            lines += [f"    {name}" for name in self.unexpected]
        if self.mis_shaped:
            lines.append(f"  {len(self.mis_shaped)} tensors have the wrong shape:")
            lines += [f"    {name}" for name in self.mis_shaped]
        lines.append("  Check that config.json matches the weights and that the mapping rules cover this model.")
        super().__init__("\n".join(lines))


def path_str(path: Sequence[Any]) -> str:
    """Dotted form of an NNX state path, e.g. ('model', 'layers', 0, 'mlp') -> 'model.layers.0.mlp'."""
    return ".".join(str(getattr(p, "key", p)) for p in path)


def _natural_key(name: str) -> list[Any]:
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", name)]


def hf_tensor_files(hf_dir: str | os.PathLike) -> dict[str, Path]:
    """HF tensor name -> safetensors file holding it, from the index json or else every *.safetensors file."""
    root = Path(hf_dir)
    index = root / INDEX_NAME
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: root / file for name, file in weight_map.items()}
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{root} has no *.safetensors files and no {INDEX_NAME}; pass an HF checkpoint dir")
    names: dict[str, Path] = {}
    for file in files:
        with safe_open(file, framework="np") as handle:
            names.update(dict.fromkeys(handle.keys(), file))
    return names


def _header_shapes(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(set(files)):
        with safe_open(file, framework="np") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def _shape_after(transform: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape a transform produces, computed on a zero-stride view so no data is touched."""
    return tuple(transform(np.broadcast_to(np.zeros((), np.float32), shape)).shape)


def _target_sharding(variable: nnx.Variable, mesh: Mesh | None) -> jax.sharding.Sharding:
    """The variable's own logical sharding over `mesh` (the one every other restore path uses), else device 0."""
    return SingleDeviceSharding(jax.devices()[0]) if mesh is None else sharding.variable_sharding(variable, mesh)


def _place(array: np.ndarray, target: jax.sharding.Sharding) -> jax.Array:
    # make_array_from_callback copies only the slices this process's devices own (works multi-host too).
    return jax.make_array_from_callback(array.shape, target, lambda index: array[index])


@dataclass(frozen=True)
class _Planned:
    hf_name: str
    path: tuple[Any, ...]
    rule: Rule


def _plan(
    source: str,
    hf_files: Mapping[str, Path],
    params: Mapping[str, tuple[tuple[Any, ...], nnx.Variable]],
    rules: Sequence[Rule],
    ignore_hf: Sequence[str],
) -> list[_Planned]:
    ignore = [_template_regex(t) for t in ignore_hf]
    shapes = _header_shapes(hf_files.values())
    planned: list[_Planned] = []
    unexpected, mis_shaped = [], []
    filled: set[str] = set()
    for name in sorted(hf_files, key=_natural_key):
        if any(p.match(name) for p in ignore):
            continue
        hit = next(((rule, target) for rule in rules if (target := rule.match_hf(name)) is not None), None)
        if hit is None or hit[1] not in params:
            unexpected.append(name if hit is None else f"{name} (-> {hit[1]}, not in the model)")
            continue
        rule, target = hit
        if target in filled:
            unexpected.append(f"{name} (-> {target}, which another tensor already fills)")
            continue
        path, variable = params[target]
        want = tuple(variable.get_value().shape)
        got = _shape_after(rule.transform.to_nnx, shapes[name])
        if got != want:
            mis_shaped.append(f"{name} {list(shapes[name])} -> {target}: becomes {list(got)}, model wants {list(want)}")
        filled.add(target)
        planned.append(_Planned(name, path, rule))
    missing = [target for target in sorted(params, key=_natural_key) if target not in filled]
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatch(source, missing, unexpected, mis_shaped)
    return planned


def load_model(
    hf_dir: str | os.PathLike,
    abstract_model: nnx.Module,
    rules: Sequence[Rule],
    *,
    mesh: Mesh | None = None,
    dtype: Any = None,
    ignore_hf: Sequence[str] = (),
) -> nnx.Module:
    """Fill `abstract_model` (from `nnx.eval_shape`) with the tensors of `hf_dir`; returns the concrete model.

    Every parameter is cast to `dtype` (default: the dtype the abstract parameter declares) and placed on the
    sharding its `logical_axes` ask for over `mesh` (default: the first device). `ignore_hf` lists HF name
    templates to skip (e.g. a tied `lm_head.weight` some checkpoints carry). Raises CheckpointMismatch listing
    every missing, unexpected and mis-shaped tensor before reading any data.
    """
    graphdef, state = nnx.split(abstract_model)
    flat = nnx.to_flat_state(state)
    params: dict[str, tuple[tuple[Any, ...], nnx.Variable]] = {}
    for path, variable in flat:
        if not isinstance(variable, nnx.Param):
            continue
        params[path_str(path)] = (tuple(path), variable)
    hf_files = hf_tensor_files(hf_dir)
    planned = _plan(str(hf_dir), hf_files, params, rules, ignore_hf)

    values: dict[tuple[Any, ...], jax.Array] = {}
    by_file: dict[Path, list[_Planned]] = {}
    for item in planned:
        by_file.setdefault(hf_files[item.hf_name], []).append(item)
    for file, items in by_file.items():
        with safe_open(file, framework="np") as handle:
            for item in items:
                variable = params[path_str(item.path)][1]
                abstract = variable.get_value()
                array = np.ascontiguousarray(item.rule.transform.to_nnx(handle.get_tensor(item.hf_name)))
                array = array.astype(dtype if dtype is not None else abstract.dtype, copy=False)
                values[item.path] = _place(array, _target_sharding(variable, mesh))
                del array

    for path, variable in flat:
        if path in values:
            variable.set_value(values[path])
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _host_value(value: jax.Array) -> np.ndarray:
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        from jax.experimental import multihost_utils

        value = multihost_utils.process_allgather(value, tiled=True)
    return np.asarray(jax.device_get(value))


def _flat_params(model: nnx.Module | nnx.State | Mapping[str, Any]) -> list[tuple[str, Any]]:
    if isinstance(model, Mapping) and not isinstance(model, nnx.State):
        return list(model.items())
    state = nnx.state(model) if isinstance(model, nnx.Module) else model
    return [
        (path_str(path), variable.get_value() if isinstance(variable, nnx.Variable) else variable)
        for path, variable in nnx.to_flat_state(state)
        if not isinstance(variable, nnx.Variable) or isinstance(variable, nnx.Param)
    ]


def iter_hf_tensors(
    model: nnx.Module | nnx.State | Mapping[str, Any], rules: Sequence[Rule], *, dtype: Any = None
) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, host array) for every parameter of `model`, one at a time, in natural HF-name order.

    `model` is a module, its nnx.State, or a flat mapping {dotted NNX path: array} (e.g. restored from Orbax).
    Raises CheckpointMismatch (before yielding anything) when a parameter has no rule. `dtype` casts on the way.
    """
    planned: list[tuple[str, Rule, Any]] = []
    unmapped = []
    for name, value in _flat_params(model):
        hit = next(((rule, hf) for rule in rules if (hf := rule.match_nnx(name)) is not None), None)
        if hit is None:
            unmapped.append(name)
        else:
            planned.append((hit[1], hit[0], value))
    if unmapped:
        raise CheckpointMismatch("export", missing=[f"{n} (no rule maps it to an HF name)" for n in unmapped])
    for hf_name, rule, value in sorted(planned, key=lambda t: _natural_key(t[0])):
        array = np.ascontiguousarray(rule.transform.to_hf(_host_value(value)))
        yield hf_name, array if dtype is None else array.astype(dtype, copy=False)


def write_safetensors(
    tensors: Iterable[tuple[str, np.ndarray]],
    out_dir: str | os.PathLike,
    max_shard_bytes: int = 2**30,
) -> dict[str, str]:
    """Write tensors as `model-0000k-of-0000n.safetensors` shards plus `model.safetensors.index.json`.

    Holds at most one shard in memory. Returns the index's weight map (tensor name -> shard file).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = []
    total = 0
    pending: dict[str, np.ndarray] = {}
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if pending:
            save_file(pending, str(out / f".shard-{len(shards):05d}.tmp"), metadata={"format": "pt"})
            shards.append(list(pending))
            pending, pending_bytes = {}, 0

    for name, array in tensors:
        if name in pending or any(name in shard for shard in shards):
            raise ValueError(f"tensor {name!r} was given twice to write_safetensors")
        if pending and pending_bytes + array.nbytes > max_shard_bytes:
            flush()
        pending[name] = np.ascontiguousarray(array)
        pending_bytes += array.nbytes
        total += array.nbytes
    flush()

    weight_map: dict[str, str] = {}
    for k, names in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        os.replace(out / f".shard-{k:05d}.tmp", out / file)
        weight_map.update(dict.fromkeys(names, file))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return weight_map
