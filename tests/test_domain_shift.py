"""The `domain_shift` study: the far-domain task placed early, in the
middle and late among order1's CoIN tasks, and the per-task report.

Nothing trains here: the study's variants are checked as the `keras-pam
run` settings they resolve to, and the report `task_land_cover.md` is
computed from hand-made cells whose numbers are known.
"""

import json
import math
import os

import numpy as np
import pytest

from keras_pam import datasets
from keras_pam.experiment import cli
from keras_pam.experiment import grid
from keras_pam.experiment import studies
from keras_pam.experiment import study_runner
from keras_pam.experiment import study_tasks
from keras_pam.experiment.study_definition import StudyDefinition

FAR = "land_cover"
COIN = list(datasets.ORDERS["order1"])
METHODS = ["finetune", "average", "pam"]
# Student's t quantile t_{0.975, 2}: the 95 % interval of three cells.
T_975_2 = 4.302652729749464


def resolved(argv):
    """`keras-pam run` flags to their settings, checked."""
    args = cli.build_parser().parse_args(argv)
    settings = cli.resolve_settings(args)
    grid.check_settings(settings)
    return settings


def test_far_task_mixes_with_the_coin_tasks():
    tasks = COIN[:3] + [FAR] + COIN[3:]
    settings = resolved(["run", "--quick", "--tasks", ",".join(tasks)])
    assert settings["tasks"] == tasks and len(tasks) == 7
    assert settings["orders"] == ["custom"]


@pytest.mark.parametrize(
    "tasks, message",
    [
        ("choice,land_covr", "Unknown task 'land_covr' for the coin"),
        ("land_cover,color,land_cover", "'land_cover' more than once"),
    ],
)
def test_bad_task_list_is_refused_before_any_work(
    tasks, message, capsys, tmp_path
):
    output = tmp_path / "run"
    with pytest.raises(SystemExit) as raised:
        cli.main(["run", "--quick", "--tasks", tasks, "--output", str(output)])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_variants_place_the_far_task_where_they_say():
    study = studies.get_study("domain_shift")
    assert list(study.variants) == ["early", "middle", "late"]
    assert study.reported_tasks == (FAR,)
    # The study's orders do not reach a variant with its own task list.
    settings = study_runner.variant_settings(
        cli.build_parser(), study, orders=["order2", "order3"]
    )
    places = {"early": 0, "middle": 3, "late": 6}
    for variant, resolved_settings in settings.items():
        tasks = resolved_settings["tasks"]
        assert tasks.index(FAR) == places[variant]
        assert [t for t in tasks if t != FAR] == COIN
        assert resolved_settings["orders"] == ["custom"]
        assert resolved_settings["seeds"] == list(study_runner.STUDY_SEEDS)
        assert resolved_settings["methods"] == METHODS
    # The middle: as many tasks before it as after it.
    middle = settings["middle"]["tasks"]
    assert middle.index(FAR) == len(middle) - 1 - middle.index(FAR)
    assert set(study.comparisons) == {
        (f"{variant}/pam", f"{variant}/{other}")
        for variant in places
        for other in ("finetune", "average")
    }


def test_place_task_refuses_what_it_cannot_do():
    assert studies.place_task(["a", "b"], "x", 3) == ["a", "b", "x"]
    with pytest.raises(ValueError, match="must be 1 to 3 among 2 tasks"):
        studies.place_task(["a", "b"], "x", 4)
    with pytest.raises(ValueError, match="already"):
        studies.place_task(["a", "x"], "x", 1)


def test_reported_tasks_must_be_task_names():
    with pytest.raises(ValueError, match="must be a tuple of task names"):
        StudyDefinition(
            name="bad",
            claim="",
            variants={"all": ("--methods", "pam")},
            reported_tasks="land_cover",
        )


def make_cell(tasks, method, seed, far):
    """A cell of `tasks` whose far task scores `far`: `(trained, merged,
    final, zero_shot)`; every other entry is 0.5."""
    trained, merged, final, zero_shot = far
    j, size = tasks.index(FAR), len(tasks)
    matrix = [[0.5] * size for _ in range(size)]
    matrix[j][j] = merged
    matrix[-1][j] = final
    pre_merge = [0.5] * size
    pre_merge[j] = trained
    zero = [0.5] * size
    zero[j] = zero_shot
    return {
        "order": "custom",
        "seed": seed,
        "method": method,
        "task_names": list(tasks),
        "eval_task_names": list(tasks),
        "matrix": matrix,
        "pre_merge": pre_merge,
        "zero_shot": zero,
        "metrics": {"acc": 0.5, "bwt": 0.0, "fwt": 0.0, "a_t": 0.5},
    }


# The far task's (trained, merged, final) per variant, method and seed.
FAR_SCORES = {
    "early": {
        "finetune": [
            (0.40, 0.40, 0.10),
            (0.40, 0.40, 0.20),
            (0.40, 0.40, 0.30),
        ],
        "average": [(0.40, 0.30, 0.20), (0.50, 0.30, 0.20), (0.60, 0.30, 0.20)],
        "pam": [(0.50, 0.35, 0.30), (0.60, 0.35, 0.30), (0.70, 0.35, 0.30)],
    },
    "late": {
        "finetune": [
            (0.80, 0.80, 0.80),
            (0.70, 0.70, 0.70),
            (0.90, 0.90, 0.90),
        ],
        "average": [(0.70, 0.50, 0.50), (0.70, 0.50, 0.50), (0.70, 0.50, 0.50)],
        "pam": [(0.60, 0.40, 0.40), (0.60, 0.45, 0.45), (0.60, 0.50, 0.50)],
    },
}


@pytest.fixture
def hand_made():
    """The `domain_shift` study and `results` of its early and late
    variants (the middle one unfinished), three seeds each."""
    study = studies.get_study("domain_shift")
    results = {}
    for variant, by_method in FAR_SCORES.items():
        tasks = study.variants[variant][1].split(",")
        cells = [
            make_cell(tasks, method, seed, scores + (0.05,))
            for method, seeds in by_method.items()
            for seed, scores in enumerate(seeds)
        ]
        results[variant] = {"settings": {}, "cells": cells}
    return study, results


def test_task_accuracies_read_the_cells_matrices():
    tasks = ["color", FAR, "shape"]
    cell = make_cell(tasks, "pam", 0, (0.9, 0.7, 0.6, 0.1))
    assert study_tasks.task_accuracies(cell, FAR) == {
        "place": 2,
        "length": 3,
        "trained": 0.9,
        "merged": 0.7,
        "final": 0.6,
        "zero_shot": 0.1,
    }
    assert study_tasks.task_accuracies(cell, "digits") is None


def table_rows(text):
    """`(variant, method)` to the cells of its row in the first table."""
    rows = {}
    for line in text.split("## Paired differences")[0].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in FAR_SCORES:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_task_table_gives_the_means_over_cells(hand_made):
    study, results = hand_made
    text = study_tasks.format_task_report(study, results, FAR)
    rows = table_rows(text)
    assert list(rows) == [
        (variant, method) for variant in FAR_SCORES for method in METHODS
    ]
    # j of T, cells, zero-shot, Rhat[j][j], R[j][j], R[T][j].
    assert rows[("early", "pam")] == [
        "1 of 7",
        "3",
        "5.00 ± 0.00",
        "60.00 ± 10.00",
        "35.00 ± 0.00",
        "30.00 ± 0.00",
    ]
    assert rows[("late", "finetune")][:4] == [
        "7 of 7",
        "3",
        "5.00 ± 0.00",
        "80.00 ± 10.00",
    ]
    assert rows[("late", "pam")][4:] == ["45.00 ± 5.00", "45.00 ± 5.00"]


def difference_line(text, a, b, label):
    lines = [
        line
        for line in text.splitlines()
        if line.startswith(f"{a} - {b}  {label} ")
    ]
    assert len(lines) == 1, (a, b, label)
    return lines[0]


def test_task_differences_are_paired_with_t_intervals(hand_made):
    study, results = hand_made
    text = study_tasks.format_task_report(study, results, FAR)
    # early: pam - finetune on Rhat is 0.1, 0.2, 0.3: mean 0.2, std 0.1.
    half = T_975_2 * 0.1 / math.sqrt(3)
    line = difference_line(text, "early/pam", "early/finetune", "Rhat[j][j]")
    assert line.endswith(
        f"+20.00 [{100 * (0.2 - half):+.2f}, {100 * (0.2 + half):+.2f}] "
        "95% CI, n=3: not resolved"
    )
    # early: pam - average is 0.1 in every cell: no spread, resolved.
    line = difference_line(text, "early/pam", "early/average", "Rhat[j][j]")
    assert line.endswith("+10.00 [+10.00, +10.00] 95% CI, n=3: resolved")
    # late: pam - finetune is -0.2, -0.1, -0.3: mean -0.2, std 0.1.
    line = difference_line(text, "late/pam", "late/finetune", "Rhat[j][j]")
    assert line.endswith(
        f"-20.00 [{100 * (-0.2 - half):+.2f}, {100 * (-0.2 + half):+.2f}] "
        "95% CI, n=3: not resolved"
    )
    # late: pam - average at the end is -0.1, -0.05, 0.0: mean -0.05,
    # std 0.05.
    half = T_975_2 * 0.05 / math.sqrt(3)
    line = difference_line(text, "late/pam", "late/average", "R[T][j]")
    assert line.endswith(
        f"-5.00 [{100 * (-0.05 - half):+.2f}, {100 * (-0.05 + half):+.2f}] "
        "95% CI, n=3: not resolved"
    )
    assert "### middle/pam - middle/finetune\n\nNot run yet" in text
    differences = study_tasks.task_differences(study, results, FAR)
    assert {(d["a"], d["metric"]) for d in differences} == {
        (f"{variant}/pam", metric)
        for variant in FAR_SCORES
        for metric in ("trained", "merged", "final")
    }


def test_study_writes_the_task_report(hand_made, tmp_path, capsys):
    """A study whose variants finished before writes `task_land_cover.md`
    beside its table, from their `results.json`."""
    study, results = hand_made
    settings = study_runner.variant_settings(cli.build_parser(), study)
    for variant, result in results.items():
        os.makedirs(tmp_path / variant)
        result = dict(result, settings=settings[variant])
        (tmp_path / variant / "results.json").write_text(json.dumps(result))
    study_runner.run_named_study(
        study, settings, output=str(tmp_path), variants=list(results)
    )
    assert "finished before" in capsys.readouterr().out
    report = (tmp_path / "task_land_cover.md").read_text(encoding="utf-8")
    assert report == study_tasks.format_task_report(study, results, FAR)
    assert (tmp_path / "table.md").is_file()
    assert (tmp_path / study_tasks.TASK_FIGURE_FILE).is_file()
    # A study without reported tasks writes none.
    reinit = studies.get_study("reinit")
    assert study_tasks.write_task_reports(str(tmp_path), reinit, {}) == []


def test_task_figure_draws_each_labels_mean_per_accuracy(hand_made):
    study, results = hand_made
    figure = study_tasks.plot_task_accuracies(study, results)
    panels = figure.axes[:3]  # one a row
    assert [panel.get_title() for panel in panels] == [
        "Rhat[j][j]",
        "R[j][j]",
        "R[T][j]",
    ]
    labels = [
        f"{variant}/{method}" for variant in FAR_SCORES for method in METHODS
    ]
    for panel, index in zip(panels, range(3), strict=True):
        # The error bars' containers are labelled `_nolegend_`.
        bars = {
            c.get_label(): c
            for c in panel.containers
            if not c.get_label().startswith("_")
        }
        assert list(bars) == labels
        for label in labels:
            variant, method = label.split("/")
            scores = FAR_SCORES[variant][method]
            mean = 100 * np.mean([cell[index] for cell in scores])
            (bar,) = bars[label].patches
            assert bar.get_height() == pytest.approx(mean)
