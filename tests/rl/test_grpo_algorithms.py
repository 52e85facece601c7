import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vinci_jax.rl import algorithms as alg


def test_grpo_advantages_use_unbiased_group_std():
    rewards = np.array([0.1, 0.5, 0.9, 0.5, 1.0, 1.0, 1.0, 1.0], np.float32)
    adv = alg.grpo_advantages(rewards, 4)
    first = rewards[:4]
    expected = (first - first.mean()) / (first.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(adv[:4], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(adv[4:], 0.0)  # all-equal group: zero advantage, no NaN
    assert alg.informative_groups(rewards, 4).tolist() == [True, False]


def test_other_estimators_and_grouping_errors():
    rewards = np.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(alg.mean_centred_advantages(rewards, 2), [0.5, -0.5, -0.5, 0.5])
    np.testing.assert_allclose(alg.leave_one_out_advantages(rewards, 2), [1.0, -1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="groups of 3"):
        alg.grpo_advantages(rewards, 3)
    with pytest.raises(KeyError, match="unknown advantage"):
        alg.lookup(alg.ADVANTAGES, "nope", "advantage")


def test_ppo_clip_asymmetric_and_dual_clip():
    logp = jnp.log(jnp.array([1.5, 0.5, 5.0, 1.1]))
    old = jnp.zeros(4)
    adv = jnp.array([1.0, -1.0, -1.0, 1.0])
    loss = alg.ppo_clip_loss(logp, old, adv, clip_low=0.2, clip_high=0.3, dual_clip=3.0)
    # ratio 1.5, A>0: clipped at 1.3 -> -1.3; ratio 0.5, A<0: max(0.5, 0.8) = 0.8;
    # ratio 5, A<0: max(5, 1.3) = 5 capped by dual clip at 3; ratio 1.1 inside the range -> -1.1.
    np.testing.assert_allclose(loss, [-1.3, 0.8, 3.0, -1.1], rtol=1e-6)
    no_dual = alg.ppo_clip_loss(logp, old, adv, dual_clip=None)
    np.testing.assert_allclose(no_dual[2], 5.0, rtol=1e-6)


def test_on_policy_gradient_equals_policy_gradient():
    # With old = stop_gradient(logp) the ratio is 1 and the clipped loss's gradient is -A (inside the clip range).
    logp = jnp.array([-1.0, -2.0, -0.5])
    adv = jnp.array([0.7, -0.3, 1.2])
    grad = jax.grad(lambda lp: alg.ppo_clip_loss(lp, jax.lax.stop_gradient(lp), adv).sum())(logp)
    np.testing.assert_allclose(grad, -adv, rtol=1e-6)


def test_aggregations():
    losses = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(alg.token_mean(losses, mask)) == pytest.approx(10.0 / 4)
    assert float(alg.token_mean(losses, mask, normalizer=8.0)) == pytest.approx(10.0 / 8)
    assert float(alg.seq_mean_token_mean(losses, mask)) == pytest.approx((2.0 + 4.0) / 2)
    assert float(alg.seq_mean_token_sum(losses, mask)) == pytest.approx((6.0 + 4.0) / 2)


def test_kl_estimators_agree_in_expectation_and_k3_is_nonnegative():
    rng = np.random.default_rng(0)
    logits_p, logits_q = rng.normal(size=5), rng.normal(size=5)
    p = np.exp(logits_p) / np.exp(logits_p).sum()
    q = np.exp(logits_q) / np.exp(logits_q).sum()
    exact = float(np.sum(p * (np.log(p) - np.log(q))))
    lp, lq = jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q))
    assert float(jnp.sum(p * alg.kl_k1(lp, lq))) == pytest.approx(exact, rel=1e-5)
    assert float(jnp.sum(p * alg.kl_k3(lp, lq))) == pytest.approx(exact, rel=1e-5)  # unbiased under p
    assert bool(jnp.all(alg.kl_k3(lp, lq) >= 0))


def test_log_ratio_is_clamped_before_exp():
    """Log-probs 200 nats apart (a recomputed or rollout old log-prob of a near-impossible token) overflow exp in
    float32; with the clamp the ratio, the losses and their gradients stay finite, and the clamp is inactive near 1."""
    logp = jnp.array([-0.1, -250.0, -1.0])
    old = jnp.array([-250.0, -0.1, -1.2])
    adv = jnp.array([-1.0, 1.0, 0.5])
    assert not bool(jnp.all(jnp.isfinite(jnp.exp(logp - old))))  # what an unclamped ratio gives
    ratio = alg.importance_ratio(logp, old)
    np.testing.assert_allclose(ratio, [np.exp(20.0), np.exp(-20.0), np.exp(0.2)], rtol=1e-6)
    for name in ("ppo_clip", "reinforce"):
        fn = alg.POLICY_LOSSES[name]
        grad = jax.grad(lambda lp, fn=fn: jnp.sum(fn(lp, old, adv, dual_clip=None)))(logp)
        assert bool(jnp.all(jnp.isfinite(fn(logp, old, adv, dual_clip=None)))) and bool(jnp.all(jnp.isfinite(grad)))
    assert float(alg.ppo_clip_loss(logp, old, adv, dual_clip=None)[2]) == pytest.approx(-0.5 * np.exp(0.2), rel=1e-6)


def test_truncated_importance_weights_are_capped_and_carry_no_gradient():
    old = jnp.log(jnp.array([0.5, 0.2, 0.9]))
    rollout = jnp.log(jnp.array([0.25, 0.4, 0.9]))
    weights = alg.truncated_is_weights(old, rollout, cap=1.5)
    np.testing.assert_allclose(weights, [1.5, 0.5, 1.0], rtol=1e-6)  # 2.0 capped at 1.5
    grad = jax.grad(lambda o: jnp.sum(alg.truncated_is_weights(o, rollout, cap=1.5)))(old)
    np.testing.assert_array_equal(grad, 0.0)
