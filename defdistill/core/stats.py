"""Small-sample statistics for the claims the report makes (numpy and the standard library only).

- `wilson_interval`: a confidence interval for a success rate (Wilson 1927), sound at 0 and 1.
- `mcnemar_exact`, `mcnemar_one_sided`: the exact (binomial) McNemar test on the discordant pairs
  of two classifiers judged on the same inputs, two- or one-sided.
- `clopper_pearson_upper`: the exact one-sided upper confidence bound of a rate.
- `paired_bootstrap_ci`: a percentile bootstrap interval for the difference of two paired
  success rates, resampling inputs (optionally within strata, e.g. seeds).
- `paired_comparison`: both at once, on per-input broken / not-broken flags of two models.
- `paired_t_test`, `sign_test`, `describe_differences`: per-seed differences of a metric
  (e.g. a membership-inference AUC), judged as pairs rather than by one model's spread.
- `t_interval`, `cluster_bootstrap_ci`: intervals with seeds as the unit of replication (a
  t-interval over per-seed differences; a bootstrap resampling seeds and, clustered across
  seeds, inputs).
- `wilcoxon_signed_rank`: a paired test of per-input values (e.g. two models' CW distances).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

DEFAULT_CONFIDENCE = 0.95
DEFAULT_BOOTSTRAP = 10_000


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n` (nan, nan when n is 0)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not 1 - 1e-17
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips (doubling the smaller tail)."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got {k} of {n}")
    if n == 0:
        return 1.0
    tail = min(k, n - k)
    count = sum(math.comb(n, i) for i in range(tail + 1))
    return min(1.0, 2 * count / 2**n)  # int / int divides exactly, whatever n


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact McNemar p-value (two-sided) from the discordant counts.

    `only_a`: inputs on which only model a is broken; `only_b`: only model b. Under the null
    (both models equally often broken) each discordant input goes either way with probability
    1/2, so the test is binomial on only_a + only_b; concordant inputs carry no information.
    """
    return binomial_two_sided(int(only_a), int(only_a) + int(only_b))


def mcnemar_one_sided(only_a: int, only_b: int) -> float:
    """Exact one-sided McNemar p-value that a is broken more often than b: P(X >= only_a) for
    X ~ Binomial(only_a + only_b, 1/2) (1.0 when there is no discordant pair)."""
    a, n = int(only_a), int(only_a) + int(only_b)
    if a < 0 or n < a:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    if a == 0:
        return 1.0
    return 1.0 - regularized_beta(n - a + 1, a, 0.5) if n > a else 0.5**n


def clopper_pearson_upper(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided exact (Clopper-Pearson) upper confidence bound of a rate: the p at which
    P(X <= successes | n, p) = 1 - confidence (1.0 when every trial succeeded)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if successes == n:
        return 1.0
    alpha = 1.0 - confidence
    if successes == 0:
        return 1.0 - alpha ** (1.0 / n)
    lo, hi = successes / n, 1.0
    for _ in range(100):  # P(X <= k) = I_{1-p}(n - k, k + 1) falls as p grows
        mid = (lo + hi) / 2
        if regularized_beta(n - successes, successes + 1, 1.0 - mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def _flags(values: Sequence[bool] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of flags, got shape {array.shape}")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{what} must hold booleans (or 0/1)")
        array = array.astype(bool)
    return array


def paired_bootstrap_ci(
    outcomes_a: Sequence[bool] | np.ndarray,
    outcomes_b: Sequence[bool] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    strata: Sequence[object] | np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling input pairs.

    Binary pairs fall in four cells (both, only a, only b, neither), so resampling n pairs with
    replacement is drawing a multinomial over those cells: exact, and fast for any n. With
    `strata` (one label per pair, e.g. the seed) pairs are resampled within each stratum.
    """
    a, b = _flags(outcomes_a, "outcomes_a"), _flags(outcomes_b, "outcomes_b")
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two equally long, non-empty flag arrays, got {a.shape} and {b.shape}")
    _z(confidence)
    labels = (
        np.zeros(a.size, dtype=int)
        if strata is None
        else np.unique(np.asarray(strata), return_inverse=True)[1]
    )
    if labels.shape != a.shape:
        raise ValueError(f"strata must label every pair: {labels.shape} labels for {a.shape} pairs")
    rng = np.random.default_rng(seed)
    net = np.zeros(n_boot)
    for label in np.unique(labels):
        sa, sb = a[labels == label], b[labels == label]
        cells = np.array([(sa & ~sb).sum(), (~sa & sb).sum(), (sa == sb).sum()], dtype=float)
        draws = rng.multinomial(sa.size, cells / sa.size, size=n_boot)
        net += draws[:, 0] - draws[:, 1]
    diffs = net / a.size
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedComparison:
    """Two models judged on the same inputs: how often each is broken, and whether they differ."""

    n: int
    rate_a: float
    rate_b: float
    both: int  # broken in both
    only_a: int  # broken in a only
    only_b: int  # broken in b only
    neither: int
    p_value: float  # exact McNemar, two-sided
    ci: tuple[float, float]  # bootstrap interval of rate_a - rate_b
    confidence: float

    @property
    def difference(self) -> float:
        return self.rate_a - self.rate_b


def paired_comparison(
    outcomes_a: Sequence[bool] | np.ndarray,
    outcomes_b: Sequence[bool] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    strata: Sequence[object] | np.ndarray | None = None,
) -> PairedComparison:
    """McNemar's exact test and a paired bootstrap interval on per-input flags (True = broken).

    outcomes_a[i] and outcomes_b[i] must refer to the same input i, each input once: seeds that
    attack the same inputs are not independent pairs, so call it per seed and combine the seeds
    with `t_interval` or `cluster_bootstrap_ci` (what the report does).
    """
    a, b = _flags(outcomes_a, "outcomes_a"), _flags(outcomes_b, "outcomes_b")
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two equally long, non-empty flag arrays, got {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return PairedComparison(
        n=int(a.size),
        rate_a=float(a.mean()),
        rate_b=float(b.mean()),
        both=int((a & b).sum()),
        only_a=only_a,
        only_b=only_b,
        neither=int((~a & ~b).sum()),
        p_value=mcnemar_exact(only_a, only_b),
        ci=paired_bootstrap_ci(a, b, confidence, n_boot, seed, strata),
        confidence=confidence,
    )


# --- per-seed differences ---------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided(t: float, df: float) -> float:
    """Two-sided p-value of Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class Differences:
    """Per-pair differences (e.g. one per seed) and the tests on them."""

    values: tuple[float, ...]
    mean: float
    sd: float  # sample sd (n - 1); nan for one value
    t: float
    t_p_value: float  # paired t-test, two-sided; nan below two values or with sd 0 and mean 0
    positive: int
    negative: int
    sign_p_value: float  # exact sign test, two-sided, zeros dropped

    @property
    def n(self) -> int:
        return len(self.values)


def paired_t_test(differences: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(t, two-sided p) of the one-sample t-test of mean difference 0."""
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return math.nan, math.nan
    sd = float(d.std(ddof=1))
    mean = float(d.mean())
    if sd == 0.0:
        return (math.nan, math.nan) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (sd / math.sqrt(d.size))
    return t, t_two_sided(t, d.size - 1)


def sign_test(differences: Sequence[float] | np.ndarray) -> float:
    """Exact two-sided sign test (zeros dropped): with 3 pairs its smallest p-value is 0.25."""
    d = np.asarray(differences, dtype=float)
    positive, negative = int((d > 0).sum()), int((d < 0).sum())
    return binomial_two_sided(positive, positive + negative)


def describe_differences(differences: Sequence[float] | np.ndarray) -> Differences:
    """Mean ± sd, paired t-test and sign test of per-pair differences."""
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size == 0 or np.isnan(d).any():
        raise ValueError("differences must be a non-empty 1-D array without NaN")
    t, p = paired_t_test(d)
    return Differences(
        values=tuple(float(v) for v in d),
        mean=float(d.mean()),
        sd=float(d.std(ddof=1)) if d.size > 1 else math.nan,
        t=t,
        t_p_value=p,
        positive=int((d > 0).sum()),
        negative=int((d < 0).sum()),
        sign_p_value=sign_test(d),
    )


# --- seeds as the unit of replication ----------------------------------------------------------


def t_quantile(probability: float, df: float) -> float:
    """The `probability` quantile of Student's t with `df` degrees of freedom (bisection on the
    two-sided tail, to 1e-12)."""
    if not 0 < probability < 1:
        raise ValueError(f"probability must lie in (0, 1), got {probability}")
    if probability == 0.5:
        return 0.0
    tail = 2 * min(probability, 1 - probability)  # two-sided p of |t|
    lo, hi = 0.0, 1.0
    while t_two_sided(hi, df) > tail:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    q = (lo + hi) / 2
    return q if probability > 0.5 else -q


def t_interval(
    values: Sequence[float] | np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (e.g. one difference per seed):
    mean ± t * sd / sqrt(n); (nan, nan) below two values."""
    d = np.asarray(values, dtype=float)
    _z(confidence)
    if d.size < 2:
        return math.nan, math.nan
    half = t_quantile(0.5 + confidence / 2, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return float(d.mean()) - half, float(d.mean()) + half


def cluster_bootstrap_ci(
    differences: np.ndarray,
    valid: np.ndarray | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean over seeds of each seed's mean per-input difference,
    resampling seeds and, within them, inputs clustered across seeds.

    `differences[s, i]` is the difference on input i in seed s (e.g. broken in a minus broken
    in b); `valid[s, i]` says whether input i counts in seed s. Each draw takes seeds with
    replacement and one set of input indices with replacement, shared by every drawn seed (the
    seeds attack the same inputs, so an input's outcomes are correlated across seeds).
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"differences must be a non-empty seeds x inputs array, got shape {d.shape}")
    mask = np.ones(d.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if mask.shape != d.shape:
        raise ValueError(f"valid must have the shape of differences, {d.shape}, got {mask.shape}")
    _z(confidence)
    values = np.where(mask, d, 0.0)
    weights = mask.astype(float)
    rng = np.random.default_rng(seed)
    seeds, inputs = d.shape
    chunks = []
    for size in [1000] * (n_boot // 1000) + ([n_boot % 1000] if n_boot % 1000 else []):
        s = rng.integers(0, seeds, (size, seeds))  # the seeds of each draw
        counts = rng.multinomial(inputs, np.full(inputs, 1 / inputs), size=size).astype(float)
        sums = np.einsum("bsi,bi->bs", values[s], counts)
        sizes = np.einsum("bsi,bi->bs", weights[s], counts)
        per_seed = np.divide(sums, sizes, out=np.full(sums.shape, np.nan), where=sizes > 0)
        finite = np.isfinite(per_seed)
        total = np.where(finite, per_seed, 0.0).sum(axis=1)
        kept = finite.sum(axis=1)
        chunks.append(np.divide(total, kept, out=np.full(size, np.nan), where=kept > 0))
    stats = np.concatenate(chunks) if chunks else np.empty(0)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class SignedRank:
    """Wilcoxon's signed-rank test of paired values (x - y), zeros dropped."""

    n: int  # pairs with a non-zero difference
    positive: int  # pairs with x > y
    negative: int
    statistic: float  # W+: the sum of the ranks of the positive differences
    z: float
    p_value: float  # two-sided, normal approximation with tie and continuity corrections
    median_ratio: float  # median over pairs of x / y (where y > 0)


def wilcoxon_signed_rank(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> SignedRank:
    """Wilcoxon's signed-rank test that x and y (paired, e.g. per-input distances of two models)
    differ in location; for the sample sizes here (tens of pairs or more) the normal approximation
    with the tie correction of the variance and a continuity correction is accurate."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two equally long 1-D arrays, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    ratio = float(np.median(a[b > 0] / b[b > 0])) if (b > 0).any() else math.nan
    d = a - b
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return SignedRank(0, 0, 0, 0.0, 0.0, 1.0, ratio)
    order = np.argsort(np.abs(d), kind="mergesort")
    ranks = np.empty(n)
    magnitudes = np.abs(d)[order]
    i = 0
    ties = 0.0
    while i < n:  # average ranks over ties
        j = i
        while j + 1 < n and magnitudes[j + 1] == magnitudes[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    w_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - ties / 48)
    z = 0.0 if sd == 0 else (w_plus - mean - math.copysign(0.5, w_plus - mean)) / sd
    if sd > 0 and abs(w_plus - mean) < 0.5:
        z = 0.0
    p = min(1.0, 2 * (1 - NormalDist().cdf(abs(z))))
    return SignedRank(n, int((d > 0).sum()), int((d < 0).sum()), w_plus, z, p, ratio)
