"""Tests for `keras_pam.metrics` (NumPy only, no Keras)."""

import math
import re

import numpy as np
import pytest

from keras_pam import metrics
from keras_pam.answer_accuracy import answer_accuracy
from keras_pam.answer_accuracy import exact_match
from keras_pam.answer_accuracy import normalize_answer
from keras_pam.answer_accuracy import vqa_accuracy
from keras_pam.metrics import continual_metrics

NAN = float("nan")

# ---------------------------------------------------------------------------
# continual_metrics
# ---------------------------------------------------------------------------

# Row i = model after task i, column j = task j.
HAND_R = [
    [0.8, 0.3, 0.1],
    [0.6, 0.9, 0.2],
    [0.5, 0.7, 0.6],
]
HAND_ZERO_SHOT = [0.1, 0.2, 0.1]
HAND_PRE_MERGE = [0.9, 1.0, 0.8]


def test_hand_computed_3x3_with_merge():
    out = continual_metrics(HAND_R, HAND_ZERO_SHOT, pre_merge=HAND_PRE_MERGE)
    assert set(out) == {"acc", "bwt", "fwt", "a_t", "a_m"}
    assert all(type(v) is float for v in out.values())
    # ACC = (0.5 + 0.7 + 0.6) / 3 = 1.8 / 3 = 0.6
    assert out["acc"] == pytest.approx(0.6)
    # BWT = ((R[3][1] - R[1][1]) + (R[3][2] - R[2][2])) / (T - 1)
    #     = ((0.5 - 0.8) + (0.7 - 0.9)) / 2 = (-0.3 - 0.2) / 2 = -0.25
    assert out["bwt"] == pytest.approx(-0.25)
    # FWT = ((R[1][2] - b_2) + (R[2][3] - b_3)) / (T - 1)
    #     = ((0.3 - 0.2) + (0.2 - 0.1)) / 2 = 0.2 / 2 = 0.1
    assert out["fwt"] == pytest.approx(0.1)
    # A_t = (0.9 + 1.0 + 0.8) / 3 = 0.9
    assert out["a_t"] == pytest.approx(0.9)
    # A_m = (0.8 + 0.9 + 0.6) / 3 = 2.3 / 3 = 0.76666...
    assert out["a_m"] == pytest.approx(2.3 / 3)


def test_hand_computed_3x3_without_merge():
    out = continual_metrics(np.array(HAND_R), np.array(HAND_ZERO_SHOT))
    assert out["acc"] == pytest.approx(0.6)
    assert out["bwt"] == pytest.approx(-0.25)
    assert out["fwt"] == pytest.approx(0.1)
    # No merge: A_t is the diagonal of R, A_m does not exist.
    assert out["a_t"] == pytest.approx(2.3 / 3)
    assert math.isnan(out["a_m"])


def test_percentages_scale_linearly():
    fractions = continual_metrics(HAND_R, HAND_ZERO_SHOT, HAND_PRE_MERGE)
    percents = continual_metrics(
        100 * np.array(HAND_R),
        100 * np.array(HAND_ZERO_SHOT),
        100 * np.array(HAND_PRE_MERGE),
    )
    for key, value in fractions.items():
        assert percents[key] == pytest.approx(100 * value)


def _paper_matrix(acc, diag_mean, num_tasks=6):
    """A T x T matrix with last-row mean `acc` and diagonal mean `diag_mean`.

    Only the lower triangle is filled; the upper triangle is NaN.
    """
    rng = np.random.default_rng(0)
    R = np.full((num_tasks, num_tasks), NAN)
    for i in range(num_tasks):
        R[i, : i + 1] = rng.uniform(30.0, 80.0, size=i + 1)
    diagonal = np.diag(R).copy()
    diagonal += diag_mean - diagonal.mean()
    R[np.arange(num_tasks), np.arange(num_tasks)] = diagonal
    # Shift the off-diagonal part of the last row so the whole row averages
    # to `acc` while R[T][T] (shared with the diagonal) stays put.
    off = R[-1, :-1]
    off += (num_tasks * acc - diagonal[-1] - off.sum()) / (num_tasks - 1)
    R[-1, :-1] = off
    assert np.mean(R[-1]) == pytest.approx(acc, abs=1e-12)
    assert np.mean(np.diag(R)) == pytest.approx(diag_mean, abs=1e-12)
    return R


def test_paper_identity_pam():
    # PAM, Table 1: ACC 49.89, A_t 76.31, A_m 66.11, printed BWT -19.45.
    T = 6
    R = _paper_matrix(acc=49.89, diag_mean=66.11)
    out = continual_metrics(R, zero_shot=None, pre_merge=[76.31] * T)
    assert out["acc"] == pytest.approx(49.89, abs=1e-9)
    assert out["a_m"] == pytest.approx(66.11, abs=1e-9)
    assert out["a_t"] == pytest.approx(76.31, abs=1e-9)
    # BWT = T / (T - 1) * (ACC - A_m) = 6/5 * (49.89 - 66.11) = -19.464
    expected = T / (T - 1) * (out["acc"] - out["a_m"])
    assert out["bwt"] == pytest.approx(expected, abs=1e-9)
    assert out["bwt"] == pytest.approx(-19.45, abs=0.02)
    assert math.isnan(out["fwt"])


def test_paper_identity_fine_tune():
    # Fine-tune, Table 1: ACC 43.36, A_t 76.29, printed BWT -39.51.
    T = 6
    R = _paper_matrix(acc=43.36, diag_mean=76.29)
    out = continual_metrics(R, zero_shot=None)
    assert out["a_t"] == pytest.approx(76.29, abs=1e-9)
    assert math.isnan(out["a_m"])
    # BWT = T / (T - 1) * (ACC - A_t) = 6/5 * (43.36 - 76.29) = -39.516
    expected = T / (T - 1) * (out["acc"] - out["a_t"])
    assert out["bwt"] == pytest.approx(expected, abs=1e-9)
    assert out["bwt"] == pytest.approx(-39.51, abs=0.02)


def test_fwt_nan_when_upper_triangle_missing():
    # Lower triangle only: R[j-1][j] is NaN, so FWT cannot be computed even
    # with a zero-shot row, but the other metrics are unaffected.
    R = [
        [0.8, NAN, NAN],
        [0.6, 0.9, NAN],
        [0.5, 0.7, 0.6],
    ]
    out = continual_metrics(R, HAND_ZERO_SHOT, HAND_PRE_MERGE)
    assert math.isnan(out["fwt"])
    assert out["acc"] == pytest.approx(0.6)
    assert out["bwt"] == pytest.approx(-0.25)


def test_fwt_ignores_rest_of_upper_triangle_and_first_zero_shot():
    # FWT only reads the super-diagonal and b_2..b_T: R[1][3] and b_1 may
    # be NaN.
    zero_shot = [NAN, 0.2, 0.1]
    out = continual_metrics(HAND_R, zero_shot)
    assert out["fwt"] == pytest.approx(0.1)
    R = np.array(HAND_R)
    R[0, 2] = NAN
    assert continual_metrics(R, zero_shot)["fwt"] == pytest.approx(0.1)


def test_fwt_nan_without_zero_shot():
    out = continual_metrics(HAND_R, None)
    assert math.isnan(out["fwt"])
    assert out["bwt"] == pytest.approx(-0.25)


def test_single_task():
    out = continual_metrics([[0.7]], [0.2], pre_merge=[0.75])
    assert out["acc"] == pytest.approx(0.7)
    assert math.isnan(out["bwt"])
    assert math.isnan(out["fwt"])
    assert out["a_t"] == pytest.approx(0.75)
    assert out["a_m"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    "matrix",
    [
        [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],  # 2 x 3
        [0.1, 0.2, 0.3],  # 1-D
        np.zeros((2, 2, 2)),  # 3-D
        np.zeros((0, 0)),  # empty
    ],
)
def test_error_not_square(matrix):
    with pytest.raises(ValueError, match="square"):
        continual_metrics(matrix, None)


def test_error_wrong_zero_shot_length():
    with pytest.raises(ValueError, match="zero_shot"):
        continual_metrics(HAND_R, [0.1, 0.2])
    with pytest.raises(ValueError, match="zero_shot"):
        continual_metrics(HAND_R, [[0.1, 0.2, 0.3]])


def test_error_wrong_pre_merge_length_or_nan():
    with pytest.raises(ValueError, match="pre_merge"):
        continual_metrics(HAND_R, HAND_ZERO_SHOT, pre_merge=[0.9, 1.0])
    with pytest.raises(ValueError, match="pre_merge"):
        continual_metrics(HAND_R, HAND_ZERO_SHOT, pre_merge=[0.9, NAN, 0.8])


def test_error_nan_on_last_row():
    R = np.array(HAND_R)
    R[2, 1] = NAN
    with pytest.raises(ValueError, match=r"last row.*\[1\]"):
        continual_metrics(R, HAND_ZERO_SHOT)


def test_error_nan_on_diagonal():
    R = np.array(HAND_R)
    R[1, 1] = NAN
    with pytest.raises(ValueError, match=r"diagonal.*\[1\]"):
        continual_metrics(R, HAND_ZERO_SHOT)


# ---------------------------------------------------------------------------
# normalize_answer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two", "2"),
        ("ten", "10"),
        ("none", "0"),
        ("the dog.", "dog"),
        ("A dog", "dog"),
        ("an apple", "apple"),
        ("yes!", "yes"),
        ("Yes?", "yes"),
        ("dont", "don't"),
        ("don't", "don't"),
        ("it isnt", "it isn't"),
        ("2.5", "2.5"),
        (".5", ".5"),
        ("u.s.", "us"),
        # A comma between digits: every punctuation mark is deleted.
        ("1,000", "1000"),
        ("1,000-ish", "1000ish"),
        # Otherwise a comma becomes a space, or vanishes next to a space.
        ("red,blue", "red blue"),
        ("red, blue", "red blue"),
        ("black-and-white", "black and white"),
        ("well - done", "well done"),
        ("(left)", "left"),
        ("  a   red \t car\n ", "red car"),
        ("", ""),
        ("the", ""),
        # Words that merely contain an article or a number word are kept.
        ("theory", "theory"),
        ("someone", "someone"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_normalize_answer_is_idempotent():
    for text in ["The Two dogs.", "1,000", "dont", "black-white", "u.s.a"]:
        once = normalize_answer(text)
        assert normalize_answer(once) == once


def test_normalize_answer_rejects_non_str():
    with pytest.raises(TypeError):
        normalize_answer(2)


# ---------------------------------------------------------------------------
# Answer scores
# ---------------------------------------------------------------------------


def test_vqa_accuracy_counts():
    answers = ["yes"] * 3 + ["no"] * 7
    assert vqa_accuracy("yes", answers) == 1.0
    assert vqa_accuracy("no", answers) == 1.0
    two = ["cat", "cat"] + ["dog"] * 8
    assert vqa_accuracy("cat", two) == pytest.approx(2 / 3)
    one = ["cat"] + ["dog"] * 9
    assert vqa_accuracy("cat", one) == pytest.approx(1 / 3)
    assert vqa_accuracy("bird", one) == 0.0


def test_vqa_accuracy_normalises_both_sides():
    answers = ["Two", "2", "two.", "3"] + ["three"] * 6
    assert vqa_accuracy("2", answers) == 1.0
    assert vqa_accuracy("The two!", answers) == 1.0
    assert vqa_accuracy("3", answers) == 1.0


def test_vqa_accuracy_errors():
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])
    with pytest.raises(TypeError):
        vqa_accuracy("yes", "yes")


def test_exact_match():
    assert exact_match("The cat.", "cat") == 1.0
    assert exact_match("two", "2") == 1.0
    assert exact_match("B", "b") == 1.0
    assert exact_match("B", "C") == 0.0
    assert exact_match("cat", "cats") == 0.0
    # The option "a" is dropped as an article by the VQA normalisation; an
    # empty answer must not match it (it did, silently, for ~1/3 of the
    # multiple-choice task).
    assert exact_match("", "a") == 0.0
    assert exact_match("the", "a") == 0.0
    assert exact_match("A.", "a") == 1.0
    assert exact_match("a", "b") == 0.0
    assert exact_match("", "") == 1.0


def test_answer_accuracy_mixed_references():
    predictions = ["A", "two", "red", "cat", "no"]
    references = [
        "a)",  # string, exact match after normalisation: 1.0
        ["2", "2", "two", "3"] + ["3"] * 6,  # 3 matching annotators: 1.0
        ["blue"],  # one-element list, exact match: 0.0
        ("cat", "cat", "dog"),  # tuple, 2 matches: 2/3
        np.array(["yes", "no", "yes"]),  # array, 1 match: 1/3
    ]
    expected = (1.0 + 1.0 + 0.0 + 2 / 3 + 1 / 3) / 5
    score = answer_accuracy(predictions, references)
    assert type(score) is float
    assert score == pytest.approx(expected)


def test_answer_accuracy_one_element_list_is_exact_match():
    # A single answer scores 1.0 on a match, not the soft 1/3.
    assert answer_accuracy(["red"], [["Red"]]) == 1.0
    assert answer_accuracy(["red"], [["red", "blue"]]) == pytest.approx(1 / 3)


def test_answer_accuracy_errors():
    with pytest.raises(ValueError, match="empty"):
        answer_accuracy([], [])
    with pytest.raises(ValueError, match="same length"):
        answer_accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        answer_accuracy(["a"], [[]])
    with pytest.raises(TypeError):
        answer_accuracy(["a"], [3])
    with pytest.raises(TypeError):
        answer_accuracy("a", ["a"])


# ---------------------------------------------------------------------------
# Docstring examples run as written.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", metrics.__all__)
def test_docstring_example_runs(name):
    doc = getattr(metrics, name).__doc__
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert blocks, f"{name} has no Example block"
    for block in blocks:
        lines = block.splitlines()
        indent = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
        # Trusted source: the examples in this package's own docstrings.
        exec("\n".join(ln[indent:] for ln in lines), {})  # noqa: S102


def test_metrics_re_exports_the_answer_scoring():
    from keras_pam import answer_accuracy as module
    from keras_pam import metrics

    for name in module.__all__:
        assert getattr(metrics, name) is getattr(module, name)
