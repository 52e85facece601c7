"""The sampler's token draw (an exponential race) has the distribution of softmax(logits) and, like Gumbel-max,
shrugs off rounding-sized changes of the logits (the engine and the lockstep sampler must draw the same tokens)."""

import jax
import jax.numpy as jnp
import numpy as np

from vinci_jax.sampling.sampler import _truncate, draw_token

DRAWS = 40_000


def _frequencies(logits: jax.Array) -> np.ndarray:
    keys = jax.random.split(jax.random.key(7), DRAWS)
    draw = jax.jit(lambda ks: jax.lax.map(lambda k: draw_token(k, logits), ks, batch_size=1000))  # bounded memory
    tokens = np.asarray(draw(keys))
    return np.bincount(tokens, minlength=logits.shape[0]) / DRAWS


def test_draws_follow_the_softmax_and_never_pick_a_masked_token():
    probs = np.asarray([0.5, 0.0, 0.3, 0.15, 0.0, 0.05])
    logits = jnp.log(jnp.asarray(probs, jnp.float32))  # zeros become -inf: masked tokens
    freq = _frequencies(logits)
    assert freq[1] == 0 and freq[4] == 0
    sigma = np.sqrt(probs * (1 - probs) / DRAWS)
    np.testing.assert_array_less(np.abs(freq - probs), 5 * sigma + 1e-12)


def test_top_k_truncation_then_draw_keeps_the_k_largest_in_proportion():
    logits = jnp.asarray([2.0, 0.5, 1.0, -1.0, 1.5], jnp.float32)
    freq = _frequencies(_truncate(logits, 2, 1.0, False))  # tokens 0 and 4 survive
    expected = np.zeros(5)
    expected[[0, 4]] = np.asarray(jax.nn.softmax(jnp.asarray([2.0, 1.5])))
    assert set(np.flatnonzero(freq)) == {0, 4}
    np.testing.assert_allclose(freq, expected, atol=5 * np.sqrt(0.25 / DRAWS))


def test_a_large_vocabulary_draws_its_rare_tail_at_the_right_rate():
    # one token holds 90% of the mass, 31,999 share the rest: the running sum must not swallow the tail
    vocab = 32_000
    logits = jnp.zeros((vocab,), jnp.float32).at[0].set(jnp.log(0.9 * (vocab - 1) / 0.1))
    freq = _frequencies(logits)
    assert abs(freq[0] - 0.9) < 5 * np.sqrt(0.09 / DRAWS)
    assert abs(freq[1:].sum() - 0.1) < 5 * np.sqrt(0.09 / DRAWS)
    assert (freq[1:] > 0).sum() > 0.1 * DRAWS * 0.8  # the tail's draws spread over many distinct tokens


def test_rounding_sized_logit_changes_almost_never_change_the_draw():
    # inverse-CDF draws flipped 89 of 20,000 at 1e-4 (its running sum collects every entry's error); Gumbel-max: 1
    rows, vocab = 4000, 2048
    logits = jax.random.normal(jax.random.key(0), (rows, vocab)) * 4.0
    nudged = logits + 1e-4 * jax.random.normal(jax.random.key(1), (rows, vocab))
    keys = jax.random.split(jax.random.key(2), rows)
    draw = jax.jit(jax.vmap(draw_token))
    assert int((draw(keys, logits) != draw(keys, nudged)).sum()) <= 2
