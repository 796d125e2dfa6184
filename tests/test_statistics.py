"""`keras_pam.statistics` against values computed by hand.

The t quantiles are the textbook table's: t(0.975, 2) = 4.303,
t(0.975, 3) = 3.182, t(0.95, 3) = 2.353.
"""

import math

import pytest

from keras_pam import statistics


def test_summarize_mean_and_sample_std():
    summary = statistics.summarize([0.2, 0.4, 0.9])
    assert summary["mean"] == pytest.approx(0.5)
    # Deviations -0.3, -0.1, 0.4: (0.09 + 0.01 + 0.16) / (3 - 1) = 0.13.
    assert summary["std"] == pytest.approx(math.sqrt(0.13))
    assert summary["n"] == 3


def test_summarize_leaves_out_missing_values():
    summary = statistics.summarize([0.2, None, math.nan, 0.4])
    assert summary == {
        "mean": pytest.approx(0.3),
        "std": pytest.approx(math.sqrt(0.02)),
        "n": 2,
    }


def test_summarize_one_and_no_value():
    one = statistics.summarize([0.7])
    assert one["mean"] == 0.7 and one["n"] == 1
    assert math.isnan(one["std"])  # No spread from one value.
    none = statistics.summarize([None])
    assert none["n"] == 0 and math.isnan(none["mean"])
    assert math.isnan(statistics.sample_std([]))


def test_paired_difference_unresolved_interval():
    # Differences 0.1, 0.2, 0.3: mean 0.2, std 0.1, n 3.
    d = statistics.paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])
    half = 4.303 * 0.1 / math.sqrt(3)  # 0.2484
    assert d["mean"] == pytest.approx(0.2)
    assert d["std"] == pytest.approx(0.1)
    assert d["n"] == 3
    assert d["low"] == pytest.approx(0.2 - half, abs=1e-4)
    assert d["high"] == pytest.approx(0.2 + half, abs=1e-4)
    assert d["confidence"] == 0.95
    assert d["resolved"] is False  # [-0.048, 0.448] holds 0.


def test_paired_difference_resolved_and_sign():
    # b - a = 1, 2, 3, 4: mean 2.5, std sqrt(5/3) = 1.2910.
    a = [1.0, 1.0, 1.0, 1.0]
    b = [2.0, 3.0, 4.0, 5.0]
    d = statistics.paired_difference(a, b)
    half = 3.182 * math.sqrt(5 / 3) / 2  # 2.054
    assert d["mean"] == pytest.approx(-2.5)
    assert d["low"] == pytest.approx(-2.5 - half, abs=1e-3)
    assert d["high"] == pytest.approx(-2.5 + half, abs=1e-3)
    assert d["high"] < 0 and d["resolved"] is True
    narrower = statistics.paired_difference(a, b, confidence=0.9)
    assert narrower["high"] - narrower["low"] == pytest.approx(
        2 * 2.353 * math.sqrt(5 / 3) / 2, abs=1e-3
    )


def test_paired_difference_one_cell_has_no_interval():
    d = statistics.paired_difference([0.6], [0.5])
    assert d["mean"] == pytest.approx(0.1) and d["n"] == 1
    assert math.isnan(d["low"]) and math.isnan(d["high"])
    assert math.isnan(d["std"])
    assert d["resolved"] is False


def test_paired_difference_drops_unmatched_cells():
    d = statistics.paired_difference([0.5, None, 0.7], [0.4, 0.3, math.nan])
    assert d["n"] == 1 and d["mean"] == pytest.approx(0.1)


def test_paired_difference_bad_input():
    with pytest.raises(ValueError, match="one value per matched cell"):
        statistics.paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="No cell"):
        statistics.paired_difference([None], [0.1])
    with pytest.raises(ValueError, match="confidence"):
        statistics.paired_difference([0.1], [0.2], confidence=95)
