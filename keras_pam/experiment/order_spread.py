"""Order spread: how much a method's result depends on the task order.

The paper reports the standard deviation of ACC over task orders and
claims that merging methods vary less with the order than the continual
methods. Here a label's spread is measured per seed, as the sample std of
its metric over that seed's orders, so two labels (or two groups of
labels, each the mean of its labels' spreads) can be compared paired over
seeds, with a Student-t interval like every other difference.
"""

import dataclasses
import math

from keras_pam.evaluation import statistics
from keras_pam.experiment.study_report import difference_sentence
from keras_pam.experiment.study_report import format_difference
from keras_pam.experiment.summary import CONFIDENCE
from keras_pam.experiment.summary import METRIC_COLUMNS
from keras_pam.experiment.summary import _metric
from keras_pam.experiment.summary import check_metric


@dataclasses.dataclass(frozen=True)
class OrderSpread:
    """Groups of a study's labels whose spread over orders is compared.

    Args:
        groups: dict. Group name to a tuple of labels `variant/method`; a
            group's spread on a seed is the mean of its labels' spreads.
        comparisons: tuple of `(a, b)`. Pairs of group names whose
            difference of spreads `a - b` is reported.
        metric: str. The metric whose spread is measured, a key of the
            study's metrics (`"acc"`, `"bwt"`, ...). Defaults to `"acc"`.

    Example:
    ```python
    OrderSpread(
        groups={"merges": ("avg/average", "pam/pam"), "ft": ("ft/finetune",)},
        comparisons=(("merges", "ft"),),
    )
    ```
    """

    groups: dict
    comparisons: tuple
    metric: str = "acc"

    def __post_init__(self):
        groups = {name: tuple(labels) for name, labels in self.groups.items()}
        if not groups or not all(groups.values()):
            raise ValueError(
                f"An order spread needs groups of labels. Received: {groups}"
            )
        object.__setattr__(self, "groups", groups)
        comparisons = tuple(tuple(pair) for pair in self.comparisons)
        for pair in comparisons:
            if len(pair) != 2 or not set(pair) <= set(groups):
                raise ValueError(
                    f"The order spread's comparison {pair!r} must name two "
                    f"of its groups: {', '.join(groups)}."
                )
        object.__setattr__(self, "comparisons", comparisons)
        check_metric(self.metric)

    def labels(self):
        """Every label of every group, each once."""
        return tuple(
            dict.fromkeys(x for labels in self.groups.values() for x in labels)
        )


def spread_by_seed(cells, label, metric="acc"):
    """A label's sample std of `metric` over each seed's orders.

    Args:
        cells: list of dict. Cell results with `order`, `seed`, `method`
            (a label) and `metrics`, as `study_files.study_cells` gives.
        label: str. The label `variant/method`.
        metric: str. The metric. Defaults to `"acc"`.

    Returns:
        A dict: seed to the std over its orders, for the seeds with at
        least two orders whose metric is measured.

    Example:
    ```python
    spread_by_seed(cells, "pam/pam")  # {0: 0.021, 1: 0.018, 2: 0.025}
    ```
    """
    values = {}
    for cell in cells:
        if cell["method"] == label:
            values.setdefault(cell["seed"], []).append(_metric(cell, metric))
    spreads = {}
    for seed, per_order in values.items():
        std = statistics.sample_std(per_order)
        if not math.isnan(std):  # NaN: fewer than two measured orders.
            spreads[seed] = std
    return spreads


def group_spread_by_seed(cells, labels, metric="acc"):
    """The mean of `labels`' spreads over orders, on each seed all have."""
    spreads = [spread_by_seed(cells, label, metric) for label in labels]
    seeds = set.intersection(*(set(s) for s in spreads)) if spreads else set()
    return {
        seed: sum(s[seed] for s in spreads) / len(spreads)
        for seed in sorted(seeds)
    }


def spread_differences(cells, spread, confidence=CONFIDENCE):
    """Each comparison's difference of spreads, paired over seeds.

    Args:
        cells: list of dict. Cell results, as in `spread_by_seed`.
        spread: `OrderSpread`. The groups and their comparisons.
        confidence: float. The intervals' level. Defaults to `0.95`.

    Returns:
        A list of `(a, b, difference)`, `difference` being
        `keras_pam.statistics.paired_difference`'s dict of `a - b` over
        the seeds both groups have.
    """
    by_group = {
        name: group_spread_by_seed(cells, labels, spread.metric)
        for name, labels in spread.groups.items()
    }
    results = []
    for a, b in spread.comparisons:
        seeds = sorted(set(by_group[a]) & set(by_group[b]))
        if not seeds:
            continue
        difference = statistics.paired_difference(
            [by_group[a][s] for s in seeds],
            [by_group[b][s] for s in seeds],
            confidence=confidence,
        )
        results.append((a, b, difference))
    return results


def format_order_spread(spread, cells, confidence=CONFIDENCE):
    """The order-spread section of a study's `differences.md`, as lines.

    Args:
        spread: `OrderSpread`. The groups and their comparisons.
        cells: list of dict. Cell results, as in `spread_by_seed`.
        confidence: float. The intervals' level. Defaults to `0.95`.

    Returns:
        A list of markdown lines: each group's spread (mean ± std over
        seeds), then each comparison's paired difference and verdict.
    """
    name = dict(METRIC_COLUMNS)[spread.metric]
    lines = [
        "## Spread over task orders",
        "",
        f"On each seed, a label's spread is the sample std of its {name} "
        "over that seed's orders, and a group's the mean of its labels' "
        "spreads; the table gives each over the seeds (points), and each "
        "comparison is paired over seeds. A negative difference: the first "
        "group varies less with the order.",
        "",
        "| group | labels | seeds | spread of " + name + " |",
        "|---|---|---|---|",
    ]
    for group, labels in spread.groups.items():
        by_seed = group_spread_by_seed(cells, labels, spread.metric)
        names = ", ".join(labels)
        if not by_seed:
            lines.append(f"| {group} | {names} | 0 | not run yet |")
            continue
        summary = statistics.summarize(list(by_seed.values()))
        text = f"{100 * summary['mean']:.2f}"
        if not math.isnan(summary["std"]):
            text += f" ± {100 * summary['std']:.2f}"
        lines.append(f"| {group} | {names} | {summary['n']} | {text} |")
    lines.append("")
    found = spread_differences(cells, spread, confidence)
    if not found:
        return lines + ["Not run yet: no seed has both groups.", ""]
    label = f"{name} spread"
    lines.append("```")
    lines += [format_difference(a, b, label, d) for a, b, d in found]
    lines += ["```", ""]
    lines += [difference_sentence(a, b, [(label, d)]) for a, b, d in found]
    lines.append("")
    return lines
