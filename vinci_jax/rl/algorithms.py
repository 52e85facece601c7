"""GRPO building blocks as small registries, so the paper's variants are configuration, not code.

- advantage estimators: rewards [num_groups * n] grouped by prompt -> one advantage per rollout;
- policy losses: per-token log-probs, old log-probs, advantages -> per-token losses;
- aggregation modes: per-token losses + mask -> scalar;
- KL estimators (k1, k2, k3) to a frozen reference policy.

Defaults follow the released run (shared/reference/virl.md): GRPO advantages with the unbiased group std + 1e-6,
PPO clip low 0.2 / high 0.3, dual-clip 3.0, token-mean aggregation, KL off.

Importance ratios are exp of a log-ratio clamped to +-LOG_RATIO_CLAMP (as verl does): with rollout or recomputed old
log-probs one token whose log-probs disagree by more than ~88 would otherwise give inf, and inf * 0 in the masked
sum gives NaN for the whole step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

AdvantageFn = Callable[[np.ndarray, int], np.ndarray]
ADVANTAGES: dict[str, AdvantageFn] = {}
POLICY_LOSSES: dict[str, Callable[..., jax.Array]] = {}
AGGREGATIONS: dict[str, Callable[[jax.Array, jax.Array, jax.Array | float | None], jax.Array]] = {}
KL_ESTIMATORS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {}
LOG_RATIO_CLAMP = 20.0


def _register(table: dict, name: str):
    def wrap(fn):
        table[name] = fn
        return fn

    return wrap


def _grouped(rewards: np.ndarray, group_size: int) -> np.ndarray:
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1 or rewards.size % group_size:
        raise ValueError(f"{rewards.shape} rewards do not split into groups of {group_size} (rollouts are grouped)")
    return rewards.reshape(-1, group_size)


@_register(ADVANTAGES, "grpo")
def grpo_advantages(rewards: np.ndarray, group_size: int, eps: float = 1e-6) -> np.ndarray:
    """(r - group mean) / (unbiased group std + eps); a group of one gets advantage 0."""
    groups = _grouped(rewards, group_size)
    std = groups.std(axis=1, ddof=1, keepdims=True) if group_size > 1 else np.ones_like(groups[:, :1])
    centred = groups - groups.mean(axis=1, keepdims=True)
    return (centred / (std + eps)).reshape(-1).astype(np.float32)


@_register(ADVANTAGES, "dr_grpo")
def mean_centred_advantages(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """Dr. GRPO: r - group mean, without dividing by the std (no difficulty re-weighting)."""
    groups = _grouped(rewards, group_size)
    return (groups - groups.mean(axis=1, keepdims=True)).reshape(-1).astype(np.float32)


@_register(ADVANTAGES, "rloo")
def leave_one_out_advantages(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """RLOO: r minus the mean of the other rollouts of the same prompt."""
    if group_size < 2:
        raise ValueError("rloo needs at least two rollouts per prompt")
    groups = _grouped(rewards, group_size)
    others = (groups.sum(axis=1, keepdims=True) - groups) / (group_size - 1)
    return (groups - others).reshape(-1).astype(np.float32)


def informative_groups(rewards: np.ndarray, group_size: int, atol: float = 1e-9) -> np.ndarray:
    """Mask [num_groups] of groups whose rewards are not all equal (the others give zero gradient)."""
    groups = _grouped(rewards, group_size)
    return (groups.max(axis=1) - groups.min(axis=1)) > atol


def importance_ratio(
    logprobs: jax.Array, old_logprobs: jax.Array, log_ratio_clamp: float = LOG_RATIO_CLAMP
) -> jax.Array:
    """exp(clip(logp - old, -c, c)): finite for any finite inputs (outside the clamp the gradient is zero)."""
    return jnp.exp(jnp.clip(logprobs - old_logprobs, -log_ratio_clamp, log_ratio_clamp))


def truncated_is_weights(
    old_logprobs: jax.Array, rollout_logprobs: jax.Array, cap: float, log_ratio_clamp: float = LOG_RATIO_CLAMP
) -> jax.Array:
    """Truncated importance sampling (verl's `tis_imp_ratio_cap`): per-token weights min(pi_old / pi_rollout, cap),
    no gradient. They correct for the sampler's numerics differing from the trainer's (pi_old: the trainer's
    log-probs of the behaviour policy, pi_rollout: the sampler's)."""
    ratio = importance_ratio(old_logprobs, rollout_logprobs, log_ratio_clamp)
    return jax.lax.stop_gradient(jnp.minimum(ratio, cap))


@_register(POLICY_LOSSES, "ppo_clip")
def ppo_clip_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float = LOG_RATIO_CLAMP,
) -> jax.Array:
    """Per-token PPO clipped surrogate with asymmetric clip range and dual clip for negative advantages.

    advantages broadcast over tokens ([B, 1] for one advantage per response).
    """
    ratio = importance_ratio(logprobs, old_logprobs, log_ratio_clamp)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = jnp.maximum(unclipped, clipped)
    if dual_clip is not None:
        # For A < 0 the ratio can grow without bound; dual clip caps the loss at -A * c.
        loss = jnp.where(advantages < 0, jnp.minimum(loss, -advantages * dual_clip), loss)
    return loss


@_register(POLICY_LOSSES, "reinforce")
def reinforce_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    log_ratio_clamp: float = LOG_RATIO_CLAMP,
    **_: object,
) -> jax.Array:
    """Plain policy gradient with an importance ratio, no clipping."""
    return -advantages * importance_ratio(logprobs, jax.lax.stop_gradient(old_logprobs), log_ratio_clamp)


@_register(AGGREGATIONS, "token-mean")
def token_mean(losses: jax.Array, mask: jax.Array, normalizer: jax.Array | float | None = None) -> jax.Array:
    """Sum over all response tokens of the batch / number of tokens (`normalizer` = global count for micro-batches)."""
    total = jnp.sum(losses * mask)
    return total / (jnp.maximum(jnp.sum(mask), 1.0) if normalizer is None else normalizer)


@_register(AGGREGATIONS, "seq-mean-token-mean")
def seq_mean_token_mean(losses: jax.Array, mask: jax.Array, normalizer: jax.Array | float | None = None) -> jax.Array:
    """Mean over sequences of each sequence's token mean (`normalizer` = global number of sequences)."""
    per_seq = jnp.sum(losses * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
    present = (jnp.sum(mask, axis=-1) > 0).astype(losses.dtype)
    return jnp.sum(per_seq * present) / (jnp.maximum(jnp.sum(present), 1.0) if normalizer is None else normalizer)


@_register(AGGREGATIONS, "seq-mean-token-sum")
def seq_mean_token_sum(losses: jax.Array, mask: jax.Array, normalizer: jax.Array | float | None = None) -> jax.Array:
    """Mean over sequences of each sequence's token sum (Dr. GRPO style when divided by a constant)."""
    per_seq = jnp.sum(losses * mask, axis=-1)
    return jnp.sum(per_seq) / (losses.shape[0] if normalizer is None else normalizer)


@_register(KL_ESTIMATORS, "k1")
def kl_k1(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    return logprobs - ref_logprobs


@_register(KL_ESTIMATORS, "k2")
def kl_k2(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    return 0.5 * jnp.square(logprobs - ref_logprobs)


@_register(KL_ESTIMATORS, "k3")
def kl_k3(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """Low-variance, always non-negative estimator exp(ref - logp) - (ref - logp) - 1, clamped for stability."""
    delta = jnp.clip(ref_logprobs - logprobs, -20.0, 20.0)
    return jnp.clip(jnp.exp(delta) - delta - 1.0, -10.0, 10.0)


def lookup(table: dict, name: str, what: str):
    if name not in table:
        raise KeyError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    return table[name]
