"""The jitted SFT train and eval steps: token-mean cross entropy over label tokens, gradient accumulation, freezing.

Batches follow one convention inside the trainer: `targets[b, t]` is the token position t must predict and
`loss_mask[b, t]` (float) says whether it counts; `vinci_jax.train.data` converts HF-style `labels` (-100 = ignore,
unshifted) to it on the host. With gradient accumulation the batch carries a leading micro-batch axis, and the
gradient is the sum over all label tokens of all micro-batches divided by their total count, so it equals the
big-batch gradient (up to float summation order) whatever the per-micro-batch token counts are.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vinci_jax.train.lm_head import chunked_head, token_cross_entropy
from vinci_jax.train.train_state import SplitModel, TrainState

LABEL_KEYS = ("targets", "loss_mask")


def model_input_names(model: nnx.Module) -> frozenset[str]:
    """Keyword arguments the model's __call__ accepts; batch keys outside this set are not passed to it."""
    params = inspect.signature(type(model).__call__).parameters
    return frozenset(name for name in params if name != "self")


def constrain_like_params(param_shardings: Any, tree: Any) -> Any:
    """Gradients (and their accumulator) on the parameters' own (FSDP) shardings: without this XLA may keep a
    gradient whole on every chip (a full fp32 copy of the model per chip at 7B). A no-op without shardings."""
    if param_shardings is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, param_shardings)


def weighted_sums(ce: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of weighted token cross entropies, sum of weights), computed in float32."""
    weights = weights.astype(jnp.float32)
    return jnp.sum(ce * weights), jnp.sum(weights)


def _loss_sums(
    split: SplitModel, input_names: Iterable[str], params: Any, batch: dict[str, Any], logit_chunk: int = 0
) -> tuple[jax.Array, jax.Array]:
    """Summed token losses and label count of one (micro-)batch. With `logit_chunk` > 0 the LM head runs over that
    many tokens of the row at a time (`vinci_jax.train.lm_head`): the same loss and gradients without the whole
    row's logits (4.6 GiB in float32 for one 8,192-token row of Qwen's vocabulary)."""
    model = split.merge(params)
    inputs = {k: v for k, v in batch.items() if k in input_names and k not in LABEL_KEYS}
    if logit_chunk <= 0:
        (ce,) = token_cross_entropy(model(**inputs), batch["targets"])
        return weighted_sums(ce, batch["loss_mask"])
    if not hasattr(model, "hidden_states"):
        raise ValueError(f"logit_chunk needs a model with hidden_states / compute_logits; {type(model).__name__} "
                         "has neither (use logit_chunk=0)")  # fmt: skip
    hidden = model.hidden_states(**inputs)
    (ce,) = chunked_head(model.compute_logits, hidden, token_cross_entropy, (batch["targets"],), logit_chunk)
    return weighted_sums(ce, batch["loss_mask"])


def make_train_step(
    split: SplitModel,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    trainable: Any,
    *,
    accum_steps: int = 1,
    input_names: Iterable[str] | None = None,
    logit_chunk: int = 0,
) -> Callable[[TrainState, dict[str, Any]], tuple[TrainState, dict[str, jax.Array]]]:
    """A pure (state, batch) -> (state, metrics) function; the caller jits it with shardings and donation.

    Frozen leaves (`trainable` False) pass through stop_gradient, so autodiff prunes their backward work.
    `logit_chunk`: tokens per LM-head chunk (0: the whole row's logits at once; see `_loss_sums`).
    """
    names = frozenset(input_names if input_names is not None else model_input_names(split.merge()))
    on_params = functools.partial(constrain_like_params, split.param_shardings)

    def sums_and_grads(params: Any, micro: dict[str, Any]) -> tuple[tuple[jax.Array, jax.Array], Any]:
        def loss_sum(p: Any) -> tuple[jax.Array, jax.Array]:
            p = jax.tree.map(lambda x, m: x if m else jax.lax.stop_gradient(x), p, trainable)
            total, count = _loss_sums(split, names, p, micro, logit_chunk)
            return total, count

        (total, count), grads = jax.value_and_grad(loss_sum, has_aux=True)(params)
        return (total, count), on_params(grads)

    def step(state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
        params = state["params"]
        if accum_steps == 1:
            (total, count), grads = sums_and_grads(params, batch)
        else:
            zeros = on_params(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))

            def body(carry: Any, micro: dict[str, Any]) -> tuple[Any, None]:
                acc_total, acc_count, acc_grads = carry
                (t, c), g = sums_and_grads(params, micro)
                acc_grads = on_params(jax.tree.map(lambda a, b: a + b.astype(jnp.float32), acc_grads, g))
                return (acc_total + t, acc_count + c, acc_grads), None

            init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zeros)
            (total, count, grads), _ = jax.lax.scan(body, init, batch)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, params)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        new_state = {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}
        metrics = {
            "loss": total / denom,
            "loss_tokens": count,
            "grad_norm": grad_norm,
            "learning_rate": jnp.asarray(schedule(state["step"]), jnp.float32),
        }
        return new_state, metrics

    return step


def make_eval_step(
    split: SplitModel, input_names: Iterable[str] | None = None, logit_chunk: int = 0
) -> Callable[[Any, dict[str, Any]], tuple[jax.Array, jax.Array]]:
    """(params, batch) -> (sum of token losses, label token count); callers add over batches, then divide."""
    names = frozenset(input_names if input_names is not None else model_input_names(split.merge()))
    return lambda params, batch: _loss_sums(split, names, params, batch, logit_chunk)
