"""Is run A better than run B on the same rows, beyond the noise? Paired tests on per-example
correctness.

Two classifiers scored on the same validation rows disagree on some of them; only those rows
say which is better. With b = rows A got right and B wrong, c = the reverse:

- **McNemar's exact test** (`mcnemar_exact`): under "equally good", each disagreement is a
  fair coin, so b ~ Binomial(b + c, 1/2); the two-sided p-value is the binomial test's
  (scipy.stats.binomtest on min(b, c)), as statsmodels' `mcnemar(exact=True)` computes it.
- **A paired bootstrap** (`paired_bootstrap`) of the accuracy difference: rows are resampled
  with replacement, the same rows for both runs, and the difference recomputed; the 2.5 and
  97.5 percentiles bound it. Given several seeds per config (pairs of runs), each replicate
  also resamples the seed pairs, so the interval carries training noise (seed to seed) as well
  as data noise (row to row): with one seed it carries only the latter.
- **The verdict** (`verdict`): "better" when the interval lies above 0 and McNemar's p is below
  alpha, "worse" for the mirror case, else "not distinguishable from". Both must agree: the
  test alone ignores seed spread, the interval alone is an approximation at small counts.

A config picked as best on validation is favoured by that choice (winner's curse); the same
tests on the test split, which played no part in the choice, are the honest confirmation.

Not supported: corrections for many comparisons (each verdict is one test at `alpha`; with
many configs, read them as screening), regression metrics, non-paired (different rows) tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05  # the usual level; each comparison is tested on its own
BOOTSTRAP_RESAMPLES = 2000  # percentile intervals settle at about this many
CONFIDENCE = 0.95


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the two disagreement counts."""
    from scipy.stats import binomtest

    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0  # no disagreement: nothing tells the two apart
    return float(binomtest(min(b, c), b + c, 0.5).pvalue)


def disagreements(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(b, c): rows only A got right, rows only B got right."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired rows differ in shape: {a.shape} vs {b.shape}")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def bootstrap_differences(correct_a: np.ndarray, correct_b: np.ndarray,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Redrawn accuracy(A) - accuracy(B), one per resample.

    Arrays are (rows,) for one pair of runs or (seed pairs, rows) for several: then each
    replicate draws seed pairs and rows with replacement (the same rows for every pair)."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape or a.shape[1] == 0:
        raise ValueError(f"paired rows differ in shape or are empty: {a.shape} vs {b.shape}")
    diff = a - b  # per seed pair, per row: -1, 0 or 1
    pairs, rows = diff.shape
    rng = np.random.default_rng(seed)
    estimates = np.empty(resamples)
    for i in range(resamples):
        chosen_pairs = rng.integers(0, pairs, pairs) if pairs > 1 else np.zeros(1, dtype=int)
        chosen_rows = rng.integers(0, rows, rows)
        estimates[i] = diff[np.ix_(chosen_pairs, chosen_rows)].mean()
    return estimates


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                     confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(difference, low, high) of accuracy(A) - accuracy(B): the observed difference and
    the percentile interval of `bootstrap_differences`."""
    estimates = bootstrap_differences(correct_a, correct_b, resamples, seed)
    difference = float(np.mean(np.asarray(correct_a, dtype=float))
                       - np.mean(np.asarray(correct_b, dtype=float)))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return difference, float(low), float(high)


def bootstrap_p_value(estimates: np.ndarray) -> float:
    """Two-sided: twice the share of redrawn differences on the far side of zero, counted
    as (1 + k) / (1 + B) so that B redraws never claim a p below 1 / (1 + B)."""
    far_side = min(int(np.sum(estimates <= 0)), int(np.sum(estimates >= 0)))
    return float(min(1.0, 2 * (1 + far_side) / (1 + len(estimates))))


def verdict(low: float, high: float, p_value: float, alpha: float = ALPHA) -> str:
    """'better', 'worse' or 'not distinguishable from' (A relative to B)."""
    if p_value < alpha and low > 0:
        return "better"
    if p_value < alpha and high < 0:
        return "worse"
    return "not distinguishable from"


@dataclass
class PairedResult:
    """One comparison of A with B on one split: per seed pair, or pooled over pairs."""

    scope: str  # "seed 42" / "pooled (3 seed pairs)"
    test: str  # "McNemar exact" (one pair of runs) / "bootstrap" (pooled over seed pairs)
    rows: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    low: float
    high: float
    only_a_right: int  # McNemar's b (pooled: summed over seed pairs, row x pair counts)
    only_b_right: int  # McNemar's c
    p_value: float
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def compare_correctness(correct_a: np.ndarray, correct_b: np.ndarray, scope: str,
                        alpha: float = ALPHA, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = 0) -> PairedResult:
    """One pair of runs: McNemar's exact p and the row bootstrap's (1 - alpha) interval.
    Several seed pairs (arrays of shape (pairs, rows)): the p-value and the interval both
    come from the bootstrap over rows and seed pairs; McNemar on counts summed over pairs
    would treat each row as pairs-many independent rows and shrink p with every seed added."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=bool))
    b = np.atleast_2d(np.asarray(correct_b, dtype=bool))
    only_a, only_b = disagreements(a, b)
    estimates = bootstrap_differences(a, b, resamples, seed)
    tail = alpha / 2 * 100
    low, high = (float(v) for v in np.percentile(estimates, [tail, 100 - tail]))
    if a.shape[0] == 1:
        test, p_value = "McNemar exact", mcnemar_exact(only_a, only_b)
    else:
        test, p_value = "bootstrap", bootstrap_p_value(estimates)
    difference = float(a.mean() - b.mean())
    return PairedResult(scope, test, int(a.shape[1]), float(a.mean()), float(b.mean()),
                        difference, low, high, only_a, only_b, p_value,
                        verdict(low, high, p_value, alpha))
