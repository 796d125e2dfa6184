"""The order spread: a label's std over each seed's orders, compared
between groups of labels paired over seeds."""

import numpy as np
import pytest

from keras_pam.experiment.order_spread import OrderSpread
from keras_pam.experiment.order_spread import format_order_spread
from keras_pam.experiment.order_spread import group_spread_by_seed
from keras_pam.experiment.order_spread import spread_by_seed
from keras_pam.experiment.order_spread import spread_differences
from keras_pam.experiment.studies import get_study
from keras_pam.experiment.study_definition import StudyDefinition

ORDERS = ("order1", "order2", "order3")


def _cells(label, acc_by_seed):
    """Cells of `label`: `acc_by_seed[seed]` is its ACC on each order."""
    return [
        {"order": order, "seed": seed, "method": label, "metrics": {"acc": a}}
        for seed, accs in acc_by_seed.items()
        for order, a in zip(ORDERS, accs, strict=True)
    ]


# "steady" moves 0.01 between orders, "swinging" 0.10, on every seed.
STEADY = {0: [0.70, 0.71, 0.72], 1: [0.60, 0.61, 0.62], 2: [0.5, 0.51, 0.52]}
SWINGING = {0: [0.5, 0.6, 0.7], 1: [0.55, 0.65, 0.75], 2: [0.4, 0.5, 0.6]}
CELLS = _cells("a/steady", STEADY) + _cells("b/swinging", SWINGING)
SPREAD = OrderSpread(
    groups={"steady": ("a/steady",), "swinging": ("b/swinging",)},
    comparisons=(("steady", "swinging"),),
)


def test_spread_is_the_std_over_each_seeds_orders():
    spreads = spread_by_seed(CELLS, "b/swinging")
    assert sorted(spreads) == [0, 1, 2]
    for seed, accs in SWINGING.items():
        assert spreads[seed] == pytest.approx(np.std(accs, ddof=1))
    # One order on a seed gives no spread for that seed.
    one_order = [c for c in CELLS if c["order"] == "order1" or c["seed"]]
    assert sorted(spread_by_seed(one_order, "a/steady")) == [1, 2]


def test_a_groups_spread_is_the_mean_of_its_labels_on_shared_seeds():
    cells = CELLS + _cells("c/other", {0: [0.1, 0.3, 0.5]})
    group = group_spread_by_seed(cells, ["a/steady", "c/other"])
    assert list(group) == [0]
    assert group[0] == pytest.approx((0.01 + 0.2) / 2)


def test_the_steady_label_has_the_smaller_spread_resolved():
    ((a, b, d),) = spread_differences(CELLS, SPREAD)
    assert (a, b) == ("steady", "swinging")
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(0.01 - 0.1)
    assert d["resolved"] and d["high"] < 0
    lines = "\n".join(format_order_spread(SPREAD, CELLS))
    assert "| steady | a/steady | 3 | 1.00 ± 0.00 |" in lines
    assert "| swinging | b/swinging | 3 | 10.00 ± 0.00 |" in lines
    assert "steady - swinging  ACC spread -9.00" in lines
    assert "steady has the lower ACC spread (by 9.00 points)" in lines


def test_unrun_groups_are_said_not_run():
    lines = "\n".join(format_order_spread(SPREAD, CELLS[:9]))
    assert "| swinging | b/swinging | 0 | not run yet |" in lines
    assert "Not run yet: no seed has both groups." in lines


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"groups": {}, "comparisons": ()}, "needs groups"),
        ({"groups": {"a": ()}, "comparisons": ()}, "needs groups"),
        ({"groups": {"a": ("x/y",)}, "comparisons": (("a", "b"),)}, "two"),
        (
            {"groups": {"a": ("x/y",)}, "comparisons": (), "metric": "f1"},
            "`metric` must be one of",
        ),
    ],
)
def test_order_spread_validates_its_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OrderSpread(**kwargs)


def test_a_study_refuses_a_spread_over_labels_it_does_not_have():
    with pytest.raises(ValueError, match="order spread names z/pam"):
        StudyDefinition(
            name="tiny",
            claim="",
            variants={"a": ("--methods", "pam")},
            order_spread=OrderSpread(
                groups={"g": ("a/pam", "z/pam")}, comparisons=()
            ),
        )


def test_methods_study_compares_the_merges_spread_with_the_continual():
    spread = get_study("methods").order_spread
    assert spread.comparisons == (("merges", "continual"), ("pam", "finetune"))
    merges = {label.split("/")[1] for label in spread.groups["merges"]}
    continual = {label.split("/")[1] for label in spread.groups["continual"]}
    assert merges == {"magmax", "average", "ties", "tall", "pam", "tall+pam"}
    assert continual == {"finetune", "lwf", "ilora", "olora", "moelora"}
