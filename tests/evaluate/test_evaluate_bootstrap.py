"""The paired bootstrap interval on constructed data whose answer is known."""

import numpy as np
import pytest

from vinci_jax.evaluate.bootstrap import paired_bootstrap


def test_a_constant_gain_has_a_zero_width_interval():
    before = np.linspace(0.0, 1.0, 50)
    interval = paired_bootstrap(before + 0.25, before)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.25, 0.25, 0.25))
    assert interval.excludes_zero


def test_interval_matches_the_normal_theory_width_and_covers_the_true_gain():
    rng = np.random.default_rng(1)
    before = rng.uniform(0, 1, 2000)
    noise = rng.normal(0.0, 0.2, 2000)
    interval = paired_bootstrap(before + 0.05 + noise, before, seed=3, resamples=4000)
    half = 1.96 * noise.std(ddof=1) / np.sqrt(2000)  # ~0.0088
    assert interval.mean == pytest.approx(0.05 + noise.mean())
    assert interval.high - interval.low == pytest.approx(2 * half, rel=0.08)
    assert interval.low < 0.05 < interval.high and interval.excludes_zero


def test_pure_noise_gain_interval_contains_zero():
    rng = np.random.default_rng(2)
    before = rng.uniform(0, 1, 400)
    after = before + rng.normal(0, 0.1, 400)
    after = after - (after - before).mean()  # mean gain exactly 0
    interval = paired_bootstrap(after, before)
    assert interval.mean == pytest.approx(0.0, abs=1e-12)
    assert interval.low < 0.0 < interval.high and not interval.excludes_zero


def test_strata_keep_the_domain_mix_and_nan_pairs_are_dropped():
    # two strata with constant but different gains: every stratified resample has the same mean
    before = np.zeros(30)
    after = np.r_[np.full(10, 1.0), np.full(20, 0.1)]
    strata = ["chart"] * 10 + ["svg"] * 20
    stratified = paired_bootstrap(after, before, strata=strata)
    assert stratified.low == pytest.approx(stratified.high) == pytest.approx(0.4)
    plain = paired_bootstrap(after, before)
    assert plain.high - plain.low > 0.1  # unstratified resamples change the mix
    with_nan = paired_bootstrap(np.r_[after, np.nan], np.r_[before, 0.0], strata=[*strata, "web"])
    assert with_nan.n == 30 and with_nan.mean == pytest.approx(0.4)
