"""Paired significance: McNemar's exact test against statsmodels and by hand, the paired
bootstrap, and the verdicts on constructed cases (a seed-only difference, a clear win)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from sftlib import significance


def hand_mcnemar(b: int, c: int) -> float:
    """The exact two-sided p by its formula: 2 * P(X <= min(b, c)), X ~ Bin(b + c, 1/2)."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b, c, expected", [(10, 2, 158 / 4096), (0, 5, 2 / 32), (3, 3, 1.0),
                                            (0, 0, 1.0), (25, 5, hand_mcnemar(25, 5))])
def test_mcnemar_known_answers(b, c, expected):
    assert significance.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.integers(0, 400))
def test_mcnemar_matches_statsmodels_and_the_formula(b, c):
    ours = significance.mcnemar_exact(b, c)
    if b + c:
        theirs = statsmodels_mcnemar([[0, b], [c, 0]], exact=True).pvalue
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-300)
    assert ours == pytest.approx(hand_mcnemar(b, c), rel=1e-9, abs=1e-300)
    assert ours == significance.mcnemar_exact(c, b)  # symmetric
    assert 0 < ours <= 1


def test_disagreement_counts_are_b_and_c():
    a = np.array([1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 0], dtype=bool)
    assert significance.disagreements(a, b) == (2, 1)
    with pytest.raises(ValueError, match="shape"):
        significance.disagreements(a, b[:3])


def _seed_run(rng: np.random.Generator, truth_easy: np.ndarray, flip: float) -> np.ndarray:
    """A run that gets the easy rows right, except that a seed flips `flip` of all rows."""
    flips = rng.random(truth_easy.size) < flip
    return truth_easy ^ flips


def test_two_runs_differing_only_in_seed_are_not_distinguishable():
    rng = np.random.default_rng(0)
    easy = rng.random(1000) < 0.85  # rows a model of this recipe gets right
    verdicts = []
    for trial in range(20):  # 20 pairs of seeds of one recipe
        a, b = (_seed_run(np.random.default_rng([trial, side]), easy, 0.04) for side in (0, 1))
        verdicts.append(significance.compare_correctness(a, b, "seed pair").verdict)
    # at alpha 0.05 an occasional false "better" / "worse" is expected; most are not
    assert verdicts.count("not distinguishable from") >= 17, verdicts


def test_a_clear_win_is_better_and_its_mirror_worse():
    rng = np.random.default_rng(1)
    a = rng.random(1000) < 0.90
    b = a & (rng.random(1000) < 0.88)  # B gets right only rows A gets right, fewer of them
    result = significance.compare_correctness(a, b, "seed 42")
    assert result.verdict == "better"
    assert result.only_b_right == 0 and result.only_a_right > 50
    assert 0 < result.low <= result.difference <= result.high
    assert significance.compare_correctness(b, a, "seed 42").verdict == "worse"


def test_pooled_bootstrap_resamples_seed_pairs_too():
    """Three seed pairs that disagree about the sign: the pooled interval covers 0, though
    each pair alone, on 4000 rows, is clear-cut."""
    rows = 4000
    a = np.ones((3, rows), dtype=bool)
    b = np.ones((3, rows), dtype=bool)
    b[0, :400] = False  # pair 1: A ahead by 10 points
    a[1, :400] = False  # pair 2: B ahead by 10 points
    b[2, :40] = False  # pair 3: A ahead by 1 point
    pooled = significance.compare_correctness(a, b, "pooled")
    assert pooled.low < 0 < pooled.high
    assert pooled.verdict == "not distinguishable from"
    assert significance.compare_correctness(a[0], b[0], "seed").verdict == "better"


def test_identical_runs_give_a_zero_difference_and_p_one():
    same = np.array([True, False, True, True])
    result = significance.compare_correctness(same, same, "seed 1")
    assert (result.difference, result.low, result.high, result.p_value) == (0, 0, 0, 1.0)
    assert result.verdict == "not distinguishable from"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_bootstrap_interval_holds_the_observed_difference_bounds(pairs):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    difference, low, high = significance.paired_bootstrap(a, b, resamples=200)
    assert difference == pytest.approx(a.mean() - b.mean())
    assert -1 <= low <= high <= 1


def test_bootstrap_p_value_is_two_sided_and_never_below_its_resolution():
    assert significance.bootstrap_p_value(np.full(999, 0.02)) == pytest.approx(2 / 1000)
    assert significance.bootstrap_p_value(np.full(999, -0.02)) == pytest.approx(2 / 1000)
    half = np.concatenate([np.full(500, -0.01), np.full(499, 0.01)])
    assert significance.bootstrap_p_value(half) == 1.0
