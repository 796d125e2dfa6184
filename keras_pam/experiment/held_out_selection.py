"""Held-out selection: a challenger against the candidate a user would
have picked without seeing the order it is judged on.

A study that tunes a setting (PAM's fixed `p`) flatters it: the best
value over all cells was chosen on the very cells it is scored on. Here,
for each task order, the candidate with the best mean metric over the
*other* orders' cells is picked, and each challenger (a rule for `p`) is
compared with that pick on this order's cells, paired over seeds; the
pairs of every order make one paired difference.
"""

import dataclasses
import math

from keras_pam.experiment.study_report import difference_sentence
from keras_pam.experiment.study_report import format_difference
from keras_pam.experiment.summary import CONFIDENCE
from keras_pam.experiment.summary import METRIC_COLUMNS
from keras_pam.experiment.summary import _metric
from keras_pam.experiment.summary import check_metric
from keras_pam.experiment.summary import differences

# The label the picked candidate's cells take in the comparison.
PICK = "held-out pick"


@dataclasses.dataclass(frozen=True)
class HeldOutSelection:
    """Which labels of a study are picked from, and which are judged.

    Args:
        candidates: tuple of str. Labels `variant/method` one of which is
            picked per order (e.g. PAM at each fixed `p`).
        challengers: tuple of str. Labels each compared with the pick.
        metric: str. The metric the pick maximises, a key of the study's
            metrics (`"acc"`, `"bwt"`, ...). Defaults to `"acc"`.

    Example:
    ```python
    HeldOutSelection(
        candidates=("p0.3/pam", "p0.5/pam"), challengers=("conflict/pam",)
    )
    ```
    """

    candidates: tuple
    challengers: tuple
    metric: str = "acc"

    def __post_init__(self):
        object.__setattr__(self, "candidates", tuple(self.candidates))
        object.__setattr__(self, "challengers", tuple(self.challengers))
        if not self.candidates or not self.challengers:
            raise ValueError(
                "A held-out selection needs at least one candidate and one "
                f"challenger. Received: candidates={self.candidates}, "
                f"challengers={self.challengers}."
            )
        shared = sorted(set(self.candidates) & set(self.challengers))
        if shared:
            raise ValueError(
                f"{shared} cannot be both a candidate and a challenger."
            )
        check_metric(self.metric)

    def labels(self):
        return self.candidates + self.challengers


def held_out_picks(cells, candidates, metric="acc"):
    """For each order, the candidate best on the other orders' cells.

    Args:
        cells: list of dict. Cell results with `order`, `seed`, `method`
            (a label) and `metrics`, as `study_files.study_cells` gives.
        candidates: list of str. The labels to pick from; a tie goes to
            the first.
        metric: str. The metric whose mean over the other orders' cells
            is maximised. Defaults to `"acc"`.

    Returns:
        A dict: order to `(label, mean)`, the pick and its mean over the
        other orders' cells. An order is left out when no candidate has a
        cell in another order (a study of one order).

    Example:
    ```python
    picks = held_out_picks(cells, ["p0.3/pam", "p0.5/pam"])
    picks["order1"]  # ("p0.5/pam", 0.73): best on order2 and order3.
    ```
    """
    orders = list(dict.fromkeys(c["order"] for c in cells))
    picks = {}
    for order in orders:
        best = None
        for label in candidates:
            values = [
                _metric(c, metric)
                for c in cells
                if c["method"] == label and c["order"] != order
            ]
            values = [v for v in values if not math.isnan(v)]
            if not values:
                continue
            mean = sum(values) / len(values)
            if best is None or mean > best[1]:
                best = (label, mean)
        if best is not None:
            picks[order] = best
    return picks


def held_out_differences(cells, selection, confidence=CONFIDENCE):
    """Each challenger minus the held-out pick, paired over cells.

    On order `o` the pick is `held_out_picks(...)[o]`; a challenger's cell
    `(o, seed)` is paired with the pick's cell `(o, seed)`.

    Args:
        cells: list of dict. Cell results, as in `held_out_picks`.
        selection: `HeldOutSelection`. The candidates and challengers.
        confidence: float. The intervals' level. Defaults to `0.95`.

    Returns:
        A tuple `(picks, diffs)`: `held_out_picks`'s dict, and a list of
        `keras_pam.experiment.differences` dicts whose `b` is `PICK`.

    Example:
    ```python
    selection = HeldOutSelection(("p0.3/pam", "p0.5/pam"), ("conflict/pam",))
    picks, diffs = held_out_differences(cells, selection)
    [d["mean"] for d in diffs if d["metric"] == "acc"]  # [0.004]
    ```
    """
    picks = held_out_picks(cells, selection.candidates, selection.metric)
    picked = [
        dict(c, method=PICK)
        for c in cells
        if c["order"] in picks and c["method"] == picks[c["order"]][0]
    ]
    challengers = [
        dict(c) for c in cells if c["method"] in selection.challengers
    ]
    pairs = [[label, PICK] for label in selection.challengers]
    return picks, differences(challengers + picked, pairs, confidence)


def format_held_out_selection(selection, cells, confidence=CONFIDENCE):
    """The held-out section of a study's `differences.md`, as lines.

    Args:
        selection: `HeldOutSelection`. The candidates and challengers.
        cells: list of dict. Cell results, as in `held_out_picks`.
        confidence: float. The intervals' level. Defaults to `0.95`.

    Returns:
        A list of markdown lines: the pick of each order, then each
        challenger's paired differences and their verdict.

    Example:
    ```python
    study = get_study("adaptive_p")
    lines = format_held_out_selection(
        study.held_out_selection, study_cells(results)
    )
    ```
    """
    picks, diffs = held_out_differences(cells, selection, confidence)
    name = dict(METRIC_COLUMNS)[selection.metric]
    lines = [
        "## Held-out selection",
        "",
        f"For each order, the candidate ({', '.join(selection.candidates)}) "
        f"with the best mean {name} over the other orders' cells, and each "
        f"of {', '.join(selection.challengers)} minus that pick on this "
        "order's cells, paired over seeds and pooled over orders.",
        "",
    ]
    if not picks:
        return lines + [
            "Not available: a pick needs cells of at least two orders.",
            "",
        ]
    lines += [
        f"| order | pick | its mean {name} over the other orders |",
        "|---|---|---|",
    ]
    lines += [
        f"| {order} | {label} | {100 * mean:.2f} |"
        for order, (label, mean) in picks.items()
    ]
    lines.append("")
    for challenger in selection.challengers:
        found = [d for d in diffs if d["a"] == challenger]
        lines += [f"### {challenger} - {PICK}", ""]
        if not found:
            lines += ["Not run yet: a variant has not finished.", ""]
            continue
        lines.append("```")
        lines += [
            format_difference(challenger, PICK, d["label"], d) for d in found
        ]
        lines += ["```", ""]
        lines.append(
            difference_sentence(
                challenger, PICK, [(d["label"], d) for d in found]
            )
        )
        lines.append("")
    return lines
