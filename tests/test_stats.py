"""defdistill.core.stats: the tests behind the report's comparisons, checked against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from defdistill.core.stats import (
    binomial_two_sided,
    describe_differences,
    mcnemar_exact,
    paired_bootstrap_ci,
    paired_comparison,
    paired_t_test,
    regularized_beta,
    sign_test,
    wilson_interval,
)


def test_wilson_interval_matches_the_textbook_formula_and_stays_inside_0_1():
    z = 1.959963984540054
    for k, n in [(81, 263), (1, 50), (359, 360)]:
        p = k / n
        for bound in wilson_interval(k, n):  # Wilson's bounds solve |p - q| = z sqrt(q (1 - q) / n)
            assert abs(p - bound) == pytest.approx(z * math.sqrt(bound * (1 - bound) / n))
    assert wilson_interval(0, 10)[0] == 0.0 and 0 < wilson_interval(0, 10)[1] < 0.35
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] > 0.65
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_agrees_with_scipys_binomial_test():
    from scipy.stats import binomtest

    for only_a, only_b in [(0, 0), (1, 0), (3, 9), (12, 2), (40, 61), (250, 300)]:
        expected = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)
    assert binomial_two_sided(5000, 10000) == 1.0  # no float underflow for large n


def test_paired_comparison_counts_discordant_inputs_and_ignores_concordant_ones():
    a = np.array([True] * 30 + [False] * 5 + [True] * 50 + [False] * 15)
    b = np.array([False] * 30 + [True] * 5 + [True] * 50 + [False] * 15)
    result = paired_comparison(a, b, n_boot=2000)
    assert (result.both, result.only_a, result.only_b, result.neither) == (50, 30, 5, 15)
    assert result.difference == pytest.approx(0.25)
    assert result.p_value == pytest.approx(mcnemar_exact(30, 5)) and result.p_value < 1e-4
    lo, hi = result.ci
    assert lo < 0.25 < hi and lo > 0.1  # the difference is clear
    # Adding inputs that both models get right (or both wrong) leaves the test unchanged.
    more = paired_comparison(np.r_[a, [False] * 100], np.r_[b, [False] * 100], n_boot=2000)
    assert more.p_value == result.p_value


def test_paired_bootstrap_ci_covers_zero_when_the_models_agree_and_is_reproducible():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.3
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0)
    b = a.copy()
    flip = rng.choice(400, 20, replace=False)
    b[flip] = ~b[flip]  # ten-ish each way
    lo, hi = paired_bootstrap_ci(a, b, seed=1)
    assert lo < 0 < hi and (lo, hi) == paired_bootstrap_ci(a, b, seed=1)
    assert paired_bootstrap_ci(a, b, seed=1, strata=[7] * 400) == (lo, hi)  # one stratum: the same draw
    with pytest.raises(ValueError, match="label every pair"):
        paired_bootstrap_ci(a, b, strata=[0, 1])
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap_ci(a, b[:10])


def test_paired_bootstrap_matches_resampling_pairs_by_index():
    rng = np.random.default_rng(3)
    a, b = rng.random(150) < 0.4, rng.random(150) < 0.5
    idx = rng.integers(0, 150, (20000, 150))
    naive = np.quantile(a[idx].mean(1) - b[idx].mean(1), [0.025, 0.975])
    fast = paired_bootstrap_ci(a, b, n_boot=20000, seed=4)
    assert fast == pytest.approx(tuple(naive), abs=0.01)


def test_t_test_and_incomplete_beta_agree_with_scipy():
    from scipy.special import betainc
    from scipy.stats import ttest_1samp

    for a, b, x in [(0.5, 0.5, 0.3), (1.0, 0.5, 0.9), (5.0, 0.5, 0.01), (30.0, 2.0, 0.95)]:
        assert regularized_beta(a, b, x) == pytest.approx(betainc(a, b, x), rel=1e-10)
    for d in ([-0.02, -0.05, -0.04], [0.01, -0.02, 0.015, 0.03], [0.3, 0.31, 0.29, 0.33, 0.2]):
        t, p = paired_t_test(d)
        expected = ttest_1samp(d, 0.0)
        assert t == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue, rel=1e-9)


def test_sign_test_and_describe_differences_say_what_three_seeds_can_show():
    assert sign_test([-0.1, -0.2, -0.3]) == 0.25  # three of three: the smallest p three seeds allow
    assert sign_test([0.0, 0.0]) == 1.0
    summary = describe_differences([-0.02, -0.05, -0.04])
    assert summary.n == 3 and summary.negative == 3 and summary.positive == 0
    assert summary.mean == pytest.approx(-0.11 / 3) and summary.sd == pytest.approx(
        np.std([-0.02, -0.05, -0.04], ddof=1)
    )
    assert summary.t_p_value == pytest.approx(0.0533, abs=1e-4) and summary.sign_p_value == 0.25
    one = describe_differences([0.1])
    assert math.isnan(one.sd) and math.isnan(one.t_p_value)


def test_t_interval_and_t_quantile_agree_with_scipy():
    from defdistill.core.stats import t_interval, t_quantile

    scipy_stats = pytest.importorskip("scipy.stats")
    for p, df in ((0.975, 2), (0.9, 5), (0.025, 10)):
        assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
    values = [0.124, 0.184, 0.156]
    expected = scipy_stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert t_interval(values) == pytest.approx(expected, rel=1e-9)
    assert all(math.isnan(x) for x in t_interval([0.1]))  # one seed: no interval over seeds


def test_cluster_bootstrap_resamples_seeds_as_well_as_inputs():
    from defdistill.core.stats import cluster_bootstrap_ci

    rng = np.random.default_rng(0)
    same = np.tile(rng.integers(0, 2, 200).astype(float), (3, 1))  # three identical seeds
    spread = same + np.array([[-0.2], [0.0], [0.2]])  # the seeds disagree by a constant
    lo_same, hi_same = cluster_bootstrap_ci(same, n_boot=2000)
    lo_spread, hi_spread = cluster_bootstrap_ci(spread, n_boot=2000)
    assert hi_spread - lo_spread > hi_same - lo_same + 0.1  # the between-seed spread widens it
    assert cluster_bootstrap_ci(same, n_boot=500, seed=3) == cluster_bootstrap_ci(same, n_boot=500, seed=3)
    valid = np.ones_like(same, dtype=bool)
    valid[:, :100] = False  # inputs that do not count are left out of every seed's mean
    lo, hi = cluster_bootstrap_ci(np.where(valid, 1.0, -5.0), valid, n_boot=200)
    assert lo == hi == 1.0


def test_wilcoxon_signed_rank_agrees_with_scipy():
    from defdistill.core.stats import wilcoxon_signed_rank

    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = rng.gamma(2, 1, 80)
    y = x * rng.uniform(0.8, 1.3, 80)
    y[:5] = x[:5]  # zero differences are dropped
    y[5:9] = y[9]  # and tied magnitudes share their rank
    result = wilcoxon_signed_rank(x, y)
    expected = scipy_stats.wilcoxon(x, y, correction=True, method="approx")
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9) and result.n == 75
    assert result.median_ratio == pytest.approx(np.median(x / y))
    assert wilcoxon_signed_rank(x, x).p_value == 1.0
