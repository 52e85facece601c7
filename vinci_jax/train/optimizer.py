"""Optimizer and learning-rate schedule from config, shared by SFT and ViRL.

Model-agnostic: it only sees a parameter pytree and its '/'-joined paths. Freezing is expressed as regexes over those
paths (the named groups' regexes come from the model family); frozen leaves get no optimizer state
(optax.multi_transform with set_to_zero) and their gradients are cut with stop_gradient by the step (see
`trainable_mask`), so no backward work is spent on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax


def path_str(path: Sequence[Any]) -> str:
    """'/'-joined names of a pytree key path (dict keys, attributes, indices)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def freeze_patterns(config: ml_collections.ConfigDict, groups: Mapping[str, str] | None = None) -> list[str]:
    """Regexes of frozen parameter paths: named groups (`freeze_vision`, `freeze_merger`) plus `freeze` regexes.

    `groups` maps the group names to path regexes; they differ by model family (Qwen3-VL's deepstack mergers belong
    to "merger"), so the default is the family of the model block (`family` / `hf_dir`, see
    `vinci_jax.models.families`).
    """
    patterns = [p for p in str(config.get("freeze", "") or "").split(",") if p.strip()]
    wanted = [name for name, flag in (("vision", "freeze_vision"), ("merger", "freeze_merger")) if config.get(flag)]
    if wanted and groups is None:
        from vinci_jax.models.families import resolve_family

        groups = resolve_family(config.get("family", "") or "", config.get("hf_dir") or None).freeze_groups
    patterns.extend(groups[name] for name in wanted)
    return patterns


def trainable_mask(params: Any, patterns: Sequence[str]) -> Any:
    """A bool pytree like `params`: True where the leaf is trained."""
    compiled = [re.compile(p.strip()) for p in patterns]
    return jax.tree_util.tree_map_with_path(lambda path, _: not any(c.search(path_str(path)) for c in compiled), params)


def make_schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay to `min_lr_ratio * learning_rate` or constant."""
    peak, warmup = float(config.learning_rate), int(config.warmup_steps)
    if config.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif config.schedule == "cosine":
        decay_steps = max(num_steps - warmup, 1)
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(config.min_lr_ratio))
    else:
        raise ValueError(f"unknown optimizer.schedule {config.schedule!r}; use 'cosine' or 'constant'")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def _decay_mask(params: Any) -> Any:
    """Weight decay on matrices only (not on biases, norm scales)."""
    return jax.tree.map(lambda x: len(x.shape) >= 2, params)


def make_optimizer(
    config: ml_collections.ConfigDict, num_steps: int, params: Any, frozen_patterns: Sequence[str] = ()
) -> tuple[optax.GradientTransformation, optax.Schedule, Any]:
    """(optimizer, schedule, trainable mask) for `params`: clip -> AdamW, frozen leaves set to zero."""
    schedule = make_schedule(config, num_steps)
    mu_dtype = None if not config.get("mu_dtype") else jnp.dtype(config.mu_dtype)
    adamw = optax.adamw(
        schedule,
        b1=float(config.b1),
        b2=float(config.b2),
        eps=float(config.eps),
        weight_decay=float(config.weight_decay),
        mu_dtype=mu_dtype,
        mask=_decay_mask,
    )
    mask = trainable_mask(params, frozen_patterns)
    if all(jax.tree.leaves(mask)):
        inner = adamw
    else:
        labels = jax.tree.map(lambda m: "train" if m else "frozen", mask)
        inner = optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)
    chain = [optax.clip_by_global_norm(float(config.grad_clip))] if config.grad_clip else []
    return optax.chain(*chain, inner), schedule, mask
