"""The regime block of a study's report, and the plots of results and tasks.

The cells are hand-made: no model is trained.
"""

import itertools
import json
import types

import numpy as np
import pytest

from keras_pam import experiment
from keras_pam import plotting
from keras_pam.datasets import Task

TASKS = ("color", "shape")


def make_cell(
    method,
    seed=0,
    own=(0.9, 0.9),
    zero_shot=(0.2, 0.2),
    order="order1",
    **metrics,
):
    """A cell's result as `_run_cell` writes it: `own[i]` is the accuracy
    on task `i` right after learning it, the matrix's diagonal; the
    columns are in reverse learning order, as an evaluation order may be;
    the tasks not evaluated yet are `None`, as JSON writes NaN."""
    columns = list(reversed(TASKS))
    matrix = []
    for i in range(len(TASKS)):
        row = []
        for name in columns:
            j = TASKS.index(name)
            row.append(own[i] if j == i else (0.5 if j < i else None))
        matrix.append(row)
    return {
        "order": order,
        "seed": seed,
        "method": method,
        "task_names": list(TASKS),
        "eval_task_names": columns,
        "matrix": matrix,
        "zero_shot": [zero_shot[TASKS.index(n)] for n in columns],
        "metrics": metrics,
    }


def study(
    zero_shot=(0.2, 0.2),
    own=(0.9, 0.9),
    finetune_own=(0.6, 0.6),
    a_m=0.81,
    a_t=0.9,
    bwt=-0.3,
    methods=("independent", "finetune", "average"),
):
    """One cell per method of `methods`, seed 0, in regime by default."""
    cells = {
        "independent": make_cell("independent", own=own, zero_shot=zero_shot),
        "finetune": make_cell(
            "finetune", own=finetune_own, zero_shot=zero_shot, bwt=bwt
        ),
        "average": make_cell(
            "average", zero_shot=zero_shot, a_m=a_m, a_t=a_t, bwt=-0.05
        ),
        "pam": make_cell("pam", zero_shot=zero_shot, a_m=0.8, a_t=0.9),
    }
    return [cells[m] for m in methods]


def verdicts(regime):
    return {key: item["verdict"] for key, item in regime["items"].items()}


def test_a_study_in_regime_on_every_item():
    regime = experiment.study_regime(study())
    assert verdicts(regime) == dict.fromkeys(regime["items"], "in regime")
    assert regime["verdict"] == "in regime"
    assert regime["targets"] == experiment.REGIME_TARGETS
    items = regime["items"]
    assert items["zero_shot_acc"]["value"] == pytest.approx(20.0)
    assert items["a_t"]["per_task"] == pytest.approx(
        {"color": 90.0, "shape": 90.0}
    )
    assert items["average_ratio"]["value"] == pytest.approx(0.9)
    assert items["finetune_bwt"]["value"] == pytest.approx(-30.0)
    json.dumps(regime)  # Goes to results.json as it is.
    text = experiment.format_regime(regime)
    lines = text.splitlines()
    assert lines[0].startswith("Paper's regime (its targets for the testbed)")
    assert "zero-shot ACC          20.00% (>= 15): in regime" in text
    assert "A_t (from independent) mean 90.00% (>= 85), lowest 90.00%" in text
    assert "color 90.00, shape 90.00" in text
    assert "averaging A_m / A_t    0.90 = 81.00% / 90.00% (>= 0.8)" in text
    assert "fine-tune BWT          -30.00 points (<= -15): in regime" in text
    assert lines[-1] == "  => in regime: all 4 items"
    assert max(len(line) for line in lines) <= 80


@pytest.mark.parametrize(
    "change, item",
    [
        ({"zero_shot": (0.1, 0.19)}, "zero_shot_acc"),
        # The mean over tasks is below 85, every task above 75.
        ({"own": (0.8, 0.86)}, "a_t"),
        # The mean is above 85, one task below 75.
        ({"own": (1.0, 0.74)}, "a_t"),
        ({"a_m": 0.7}, "average_ratio"),
        ({"bwt": -0.1}, "finetune_bwt"),
    ],
)
def test_each_item_outside_the_regime(change, item):
    regime = experiment.study_regime(study(**change))
    expected = dict.fromkeys(regime["items"], "in regime")
    expected[item] = "outside"
    assert verdicts(regime) == expected
    assert regime["verdict"] == "outside"
    text = experiment.format_regime(regime)
    assert text.splitlines()[-1] == "  => outside: 1 of 4 items outside"


def test_the_targets_themselves_are_in_regime():
    regime = experiment.study_regime(
        study(zero_shot=(0.15, 0.15), own=(0.95, 0.75), a_m=0.72, bwt=-0.15)
    )
    assert regime["verdict"] == "in regime"
    assert regime["items"]["a_t"]["mean"] == pytest.approx(85.0)


def test_a_t_reads_independent_when_it_ran_else_finetune():
    both = experiment.study_regime(
        study(own=(0.9, 0.95), finetune_own=(0.5, 0.6))
    )["items"]["a_t"]
    assert both["source"] == "independent"
    assert both["per_task"] == pytest.approx({"color": 90.0, "shape": 95.0})
    regime = experiment.study_regime(
        study(finetune_own=(0.5, 0.6), methods=("finetune", "average"))
    )
    alone = regime["items"]["a_t"]
    assert alone["source"] == "finetune"
    assert alone["per_task"] == pytest.approx({"color": 50.0, "shape": 60.0})
    assert alone["verdict"] == "outside"
    text = experiment.format_regime(regime)
    assert "A_t (from finetune)    mean 55.00% (>= 85), lowest 50.00%" in text


def test_means_over_seeds_count_each_zero_shot_row_once():
    cells = [
        make_cell("finetune", 0, own=(0.8, 0.9), zero_shot=(0.1, 0.1)),
        make_cell("average", 0, own=(0.8, 0.9), zero_shot=(0.1, 0.1)),
        make_cell("finetune", 1, own=(1.0, 0.7), zero_shot=(0.4, 0.4)),
    ]
    items = experiment.study_regime(cells)["items"]
    # Seed 0's row (twice, one per method) counts once: (10 + 40) / 2.
    assert items["zero_shot_acc"]["value"] == pytest.approx(25.0)
    assert items["a_t"]["per_task"] == pytest.approx(
        {"color": 90.0, "shape": 80.0}
    )
    assert items["a_t"]["min"] == pytest.approx(80.0)


def test_an_item_whose_method_did_not_run_is_not_measured():
    regime = experiment.study_regime(study(methods=("pam",)))
    assert verdicts(regime) == {
        "zero_shot_acc": "in regime",
        "a_t": "not measured",
        "average_ratio": "not measured",
        "finetune_bwt": "not measured",
    }
    assert regime["verdict"] == "not measured"
    text = experiment.format_regime(regime)
    assert "A_t                    not measured (run with --methods " in text
    assert "pam,independent)" in text
    assert "not measured (run with --methods pam,average)" in text
    assert "not measured (run with --methods pam,finetune)" in text
    lines = text.splitlines()
    assert lines[-1] == "  => in regime on the 1 measured item, 3 not measured"
    outside = experiment.study_regime(
        study(finetune_own=(0.9, 0.9), bwt=-0.05, methods=("finetune", "pam"))
    )
    assert outside["verdict"] == "outside"
    assert experiment.format_regime(outside).splitlines()[-1] == (
        "  => outside: 1 of 4 items outside, 1 not measured"
    )


def test_the_report_ends_with_the_regime_block():
    cells = study()
    settings = {
        "orders": ["order1"],
        "seeds": [0],
        "methods": ["independent", "finetune", "average"],
    }
    summary = experiment.aggregate(cells, settings)
    regime = experiment.study_regime(cells)
    text = experiment.format_report(
        summary, [], settings, {"order1": list(TASKS)}, regime
    )
    assert text.endswith(experiment.format_regime(regime))
    assert "Paper's regime" not in experiment.format_report(
        summary, [], settings, {"order1": list(TASKS)}
    )


def test_acc_bwt_labels_never_overlap_at_one_point():
    import matplotlib.text
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    methods = ("finetune", "average", "pam")
    figure = plotting.plot_acc_bwt(
        {m: {"acc": 0.5, "bwt": -0.2, "acc_std": 0.01} for m in methods}
    )
    # The figure comes back closed, its canvas detached from pyplot's.
    FigureCanvasAgg(figure)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    labels = [
        text
        for text in figure.findobj(matplotlib.text.Text)
        if text.get_text() in methods and text.get_visible()
    ]
    assert sorted(t.get_text() for t in labels) == sorted(methods)
    boxes = [text.get_window_extent(renderer) for text in labels]
    for first, second in itertools.combinations(boxes, 2):
        assert not first.overlaps(second)


def toy_split(size):
    return {
        "images": np.zeros((3, size, size, 3), "uint8"),
        "prompts": np.array(
            ["answer en what color is the shape in the middle\n"] * 2
            + ["caption en\n"],
            dtype=object,
        ),
        "responses": np.array(["red", "blue", "a red square"], dtype=object),
    }


def test_task_gallery_is_written(tmp_path):
    path = tmp_path / "gallery.png"
    # A task drawn for a patch of 8 pixels, and one of a `Task` class that
    # may predate `patch_size`: `getattr` reads it.
    drawn = types.SimpleNamespace(name="one", train=toy_split(16), patch_size=8)
    split = toy_split(16)
    loaded = Task("two", train=split, test=split, metric="exact")
    tasks = [drawn, loaded]
    figure = plotting.plot_task_gallery(
        tasks, examples_per_task=4, path=str(path), title="tiny"
    )
    assert path.stat().st_size > 0
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[0] == "what color is the shape in the\nmiddle\n→ red"
    assert titles[2] == "caption\n→ a red square"
    assert titles[3] == ""  # Three examples in four columns.
    assert [figure.axes[i].get_ylabel() for i in (0, 4)] == ["one", "two"]
    # The patch borders: one horizontal and one vertical line at 8 pixels.
    assert len(figure.axes[0].lines) == 2
    assert not figure.axes[4].lines


def test_perception_curves_are_drawn(tmp_path):
    log = [
        {"step": 100 * k, "accuracy": {"color": 0.2 * k, "shape": 0.1 * k}}
        for k in (1, 2, 3)
    ]
    path = tmp_path / "perceptions.png"
    figure = plotting.plot_perception_log(log, "a base", str(path))
    assert path.stat().st_size > 0
    (axes,) = figure.axes
    assert [line.get_label() for line in axes.get_lines()] == [
        "color",
        "shape",
    ]
    np.testing.assert_allclose(axes.get_lines()[0].get_ydata(), [0.2, 0.4, 0.6])
    with pytest.raises(ValueError, match="no perception accuracies"):
        plotting.plot_perception_log([{"step": 1, "loss": 0.5}])
    shaded = plotting.plot_perception_log(log, places_first_steps=200)
    (patch,) = shaded.axes[0].patches
    assert patch.get_x() == 0 and patch.get_width() == 200
