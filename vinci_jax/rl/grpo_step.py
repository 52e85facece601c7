"""The jitted pieces of one GRPO update: per-micro-batch gradients of the clipped policy loss, and the apply.

Micro-batches are accumulated on the host side of the loop (a jitted gradient call per micro-batch, summed on
device), because each micro-batch carries its own image layout (VisionInputs bucket) and a scan would force one
shape on all of them. The loss of a micro-batch is already divided by the *global* normaliser (total response
tokens for token-mean), so the sum of micro-batch gradients is exactly the big-batch gradient.

Sequences are prompt (left-padded) followed by the response (right-padded). Only the response window gets logits:
hidden states at positions `response_start + j` predict `targets[b, j]`, and `response_mask[b, j]` marks real
response tokens (see vinci_jax.rl.batch). Log-probabilities are `log_softmax(logits / temperature)` at the
targets, the same quantity the sampler returns.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vinci_jax.rl import algorithms as alg
from vinci_jax.train.lm_head import chunked_head, target_logprobs
from vinci_jax.train.sft_step import constrain_like_params
from vinci_jax.train.train_state import SplitModel, TrainState

MODEL_KEYS = ("input_ids", "position_ids", "attention_mask", "segment_ids", "vision_inputs")


@dataclasses.dataclass(frozen=True)
class GRPOLossConfig:
    """Loss knobs (released defaults): PPO clip 0.2 / 0.3, dual clip 3, token-mean, no KL."""

    policy_loss: str = "ppo_clip"
    clip_low: float = 0.2
    clip_high: float = 0.3
    dual_clip: float | None = 3.0
    loss_agg: str = "token-mean"
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    temperature: float = 1.0
    old_logprobs: str = "detached"  # detached | rollout | recomputed (see vinci_jax.rl.virl)
    # response tokens per LM-head chunk (0: the whole window at once). Each chunk's [rows, chunk, vocab] logits are
    # recomputed in the backward pass instead of kept, so memory holds one chunk's logits, not the window's.
    logit_chunk: int = 0
    log_ratio_clamp: float = alg.LOG_RATIO_CLAMP  # |log pi - log pi_old| bound before exp (finite ratios)
    # truncated importance sampling (0: off): tokens weighted by min(pi_old / pi_sampler, cap), as verl's TIS
    tis_cap: float = 0.0

    def __post_init__(self) -> None:
        alg.lookup(alg.POLICY_LOSSES, self.policy_loss, "policy loss")
        alg.lookup(alg.AGGREGATIONS, self.loss_agg, "loss aggregation")
        alg.lookup(alg.KL_ESTIMATORS, self.kl_estimator, "KL estimator")
        if self.old_logprobs not in ("detached", "rollout", "recomputed"):
            raise ValueError(f"old_logprobs must be detached, rollout or recomputed, got {self.old_logprobs!r}")
        if self.tis_cap and self.old_logprobs == "rollout":
            raise ValueError("tis_cap weighs the sampler's log-probs against the trainer's: use detached or recomputed")


def window_logprobs(
    model: Any, window: jax.Array, targets: jax.Array, temperature: float, chunk: int = 0
) -> tuple[jax.Array, jax.Array]:
    """`target_logprobs` of the LM head over hidden states `window` [B, L, D], `chunk` tokens at a time.

    At the released lengths one micro-batch's logits are 16 x 10,240 x 152k floats (100 GB); in chunks
    (`vinci_jax.train.lm_head`, shared with SFT's loss) only one chunk's logits live at a time, forward and backward.
    """
    per_token = functools.partial(target_logprobs, temperature=temperature)
    logp, entropy = chunked_head(model.compute_logits, window, per_token, (targets,), chunk)
    return logp, entropy


def _forward_logprobs(split: SplitModel, params: Any, micro: dict[str, Any], temperature: float, chunk: int = 0):
    model = split.merge(params)
    hidden = model.hidden_states(**{k: micro[k] for k in MODEL_KEYS if micro.get(k) is not None})
    if "target_positions" in micro:  # packed rows: the hidden state before each response token, per row
        window = jnp.take_along_axis(hidden, micro["target_positions"][..., None], axis=1)
    else:
        window = jax.lax.dynamic_slice_in_dim(hidden, micro["response_start"], micro["targets"].shape[1], axis=1)
    return window_logprobs(model, window, micro["targets"], temperature, chunk)


def make_logprob_fn(
    split: SplitModel, temperature: float, logit_chunk: int = 0
) -> Callable[[Any, dict[str, Any]], jax.Array]:
    """(params, micro) -> log p of the targets [B, L] (no gradient): old log-probs by recomputation, reference KL."""
    return lambda params, micro: _forward_logprobs(split, params, micro, temperature, logit_chunk)[0]


def make_grad_fn(
    split: SplitModel, loss: GRPOLossConfig, trainable: Any, param_shardings: Any = None
) -> Callable[[Any, dict[str, Any], jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """(params, micro, normaliser) -> (grads, summed statistics). Frozen leaves get stop_gradient.

    With `param_shardings` (the train state's "params" shardings) the gradients come out on them, so a micro-batch's
    gradient and the accumulator summing them are FSDP-sharded like the parameters, never whole on every chip.
    """
    policy_loss = alg.lookup(alg.POLICY_LOSSES, loss.policy_loss, "policy loss")
    aggregate = alg.lookup(alg.AGGREGATIONS, loss.loss_agg, "loss aggregation")
    kl_fn = alg.lookup(alg.KL_ESTIMATORS, loss.kl_estimator, "KL estimator")

    def objective(params: Any, micro: dict[str, Any], normaliser: jax.Array):
        params = jax.tree.map(lambda x, m: x if m else jax.lax.stop_gradient(x), params, trainable)
        logp, entropy = _forward_logprobs(split, params, micro, loss.temperature, loss.logit_chunk)
        mask = micro["response_mask"].astype(jnp.float32)
        if loss.old_logprobs == "detached":
            old = jax.lax.stop_gradient(logp)
        else:  # the sampler's, or the updater's recomputation under the pre-update parameters
            old = micro["rollout_logprobs" if loss.old_logprobs == "rollout" else "old_logprobs"]
        advantages = micro["advantages"]  # [B] one per row, or [B, L] per token (packed rows hold several rollouts)
        advantages = advantages[:, None] if advantages.ndim == 1 else advantages
        kwargs = {"clip_low": loss.clip_low, "clip_high": loss.clip_high, "dual_clip": loss.dual_clip}
        per_token = policy_loss(logp, old, advantages, log_ratio_clamp=loss.log_ratio_clamp, **kwargs)
        stats = {}
        if loss.tis_cap:
            weights = alg.truncated_is_weights(old, micro["rollout_logprobs"], loss.tis_cap, loss.log_ratio_clamp)
            per_token = per_token * weights
            stats["tis_weight_sum"] = jnp.sum(weights * mask)
        if loss.kl_coef > 0:
            kl = kl_fn(logp, micro["ref_logprobs"])
            per_token = per_token + loss.kl_coef * kl
            stats["kl_sum"] = jnp.sum(kl * mask)
        value = aggregate(per_token, mask, normaliser)
        ratio = alg.importance_ratio(logp, old, loss.log_ratio_clamp)
        clipped = ((ratio < 1 - loss.clip_low) & (advantages < 0)) | ((ratio > 1 + loss.clip_high) & (advantages > 0))
        stats |= {
            "loss": value,
            "tokens": jnp.sum(mask),
            "entropy_sum": jnp.sum(jax.lax.stop_gradient(entropy) * mask),
            "clipped_sum": jnp.sum(clipped.astype(jnp.float32) * mask),
            "ratio_sum": jnp.sum(jax.lax.stop_gradient(ratio) * mask),
        }
        return value, stats

    def grad_fn(params: Any, micro: dict[str, Any], normaliser: jax.Array):
        (_, stats), grads = jax.value_and_grad(objective, has_aux=True)(params, micro, normaliser)
        return constrain_like_params(param_shardings or split.param_shardings, grads), stats

    return grad_fn


def make_apply_fn(
    optimizer: optax.GradientTransformation, schedule: optax.Schedule
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """(state, summed grads) -> (new state, {grad_norm, learning_rate}); the caller jits it with donation."""

    def apply(state: TrainState, grads: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        params = state["params"]
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = {
            "grad_norm": optax.global_norm(grads),
            "param_norm": optax.global_norm(new_params),
            "learning_rate": jnp.asarray(schedule(state["step"]), jnp.float32),
        }
        return {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    return apply


def add_trees(a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: x + y, a, b)
