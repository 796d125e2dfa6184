"""A named study's figures, drawn from a hand-made study folder's cells:
the forgetting curves always, the misalignment curves when cells carry
them."""

import math

import numpy as np
import pytest

from keras_pam.experiment import study_figures
from keras_pam.experiment import study_files
from keras_pam.experiment.study_definition import StudyDefinition

ORDERS = {"order1": ["color", "shape"], "order2": ["shape", "color"]}


def _cell(order, seed, method, accuracy, curves=None):
    """A finished cell: after step `i`, task `j` of the order scores
    `accuracy[i][j]`; its eval columns in alphabetical order."""
    names = ORDERS[order]
    columns = sorted(names)
    matrix = np.full((2, 2), np.nan)
    for i in range(2):
        for j, name in enumerate(names):
            matrix[i][columns.index(name)] = accuracy[i][j]
    reports = [
        {"name": name, "misalignment_curve": (curves or {}).get(name, [])}
        for name in names
    ]
    return {
        "order": order,
        "seed": seed,
        "method": method,
        "task_names": names,
        "eval_task_names": columns,
        "matrix": matrix.tolist(),
        "metrics": {"acc": 0.5, "bwt": -0.1, "fwt": 0.0, "a_t": 0.6},
        "task_reports": reports,
    }


def _results(orders, curves=None):
    def result(method, shift):
        return {
            "settings": {"orders": list(orders), "seeds": [0, 1]},
            "cells": [
                _cell(
                    order,
                    seed,
                    method,
                    [[0.8 + shift + 0.1 * seed, 0.1], [0.5, 0.9]],
                    (curves or {}).get(method),
                )
                for order in orders
                for seed in (0, 1)
            ],
        }

    return {"ft": result("finetune", 0.0), "pam": result("pam", 0.05)}


def _study():
    return StudyDefinition(
        name="figures",
        claim="Figures.",
        variants={
            "ft": ("--methods", "finetune"),
            "pam": ("--methods", "pam"),
        },
        comparisons=(("pam/pam", "ft/finetune"),),
    )


def test_forgetting_panels_follow_each_orders_tasks():
    cells = study_files.study_cells(_results(["order1", "order2"]))
    rows = study_figures.forgetting_panels(cells, ["ft/finetune", "pam/pam"])
    # Two labels, each a panel per order: their tasks come in other orders.
    assert [len(row) for row in rows] == [2, 2]
    first, second = rows[1]
    assert first["title"] == "pam/pam, order1 (2 cells)"
    assert first["task_names"] == ["color", "shape"]
    assert second["task_names"] == ["shape", "color"]
    # Over seeds 0 and 1: the first task after the first step.
    assert first["mean"][0][0] == pytest.approx(0.9)
    assert first["std"][0][0] == pytest.approx(np.std([0.85, 0.95], ddof=1))
    assert first["mean"][1].tolist() == pytest.approx([0.5, 0.9])
    # One order: one panel per label, over all its cells.
    cells = study_files.study_cells(_results(["order1"]))
    rows = study_figures.forgetting_panels(cells, ["ft/finetune"])
    assert len(rows) == 1 and len(rows[0]) == 1
    assert rows[0][0]["title"] == "ft/finetune (2 cells)"


def test_misalignment_curves_average_tasks_and_cells():
    curves = {
        "pam": {"color": [[2, 0.1], [4, 0.3]], "shape": [[2, 0.2]]},
    }
    cells = study_files.study_cells(_results(["order1"], curves))
    found = study_figures.misalignment_curves(cells, ["ft/finetune", "pam/pam"])
    # Fine-tuning's cells carry no curve: it has no line.
    assert list(found) == ["pam/pam"]
    curve = found["pam/pam"]
    assert curve["updates"] == [2, 4]
    # Two cells x two tasks at update 2, two cells x one task at 4.
    assert curve["count"] == 4
    assert curve["mean"] == pytest.approx([0.15, 0.3])
    assert curve["std"][0] == pytest.approx(np.std([0.1, 0.2] * 2, ddof=1))
    assert curve["std"][1] == pytest.approx(0.0)
    one = study_figures.misalignment_curves(cells[-1:], ["pam/pam"])
    assert math.isnan(one["pam/pam"]["std"][1])
    table = study_figures.format_misalignment_table(found, "tiny")
    row = [line for line in table.splitlines() if line.startswith("| pam")]
    assert row == ["| pam/pam | 4 | 15.00 ± 5.77 | 30.00 ± 0.00 |"]
    table = study_figures.format_misalignment_table(one, "tiny")
    # One task reaches update 4: no spread there.
    assert "| pam/pam | 2 | 15.00 ± 7.07 | 30.00 |" in table.splitlines()


@pytest.mark.parametrize("tracked", [False, True])
def test_report_writes_the_figures_from_saved_cells(tmp_path, tracked):
    curves = None
    if tracked:
        curves = {
            "pam": {"color": [[2, 0.1], [4, 0.3]], "shape": [[2, 0.2]]},
            "finetune": {"color": [[2, 0.3]], "shape": [[2, 0.4]]},
        }
    results = _results(["order1", "order2"], curves)
    study_files.write_report(str(tmp_path), _study(), results)
    assert (tmp_path / "forgetting.png").stat().st_size > 1000
    misalignment = tmp_path / "misalignment.png"
    # Cells without curves draw no misalignment figure, and no error.
    assert misalignment.exists() == tracked
    assert (tmp_path / "misalignment.md").exists() == tracked
    if tracked:
        assert misalignment.stat().st_size > 1000


def test_figures_of_many_labels_wrap_into_rows(tmp_path):
    results = _results(["order1"])
    cells = study_files.study_cells(results)
    labels = []
    for i in range(5):
        label = f"v{i}/finetune"
        labels.append(label)
        cells += [dict(c, method=label) for c in cells[:2]]
    written = study_figures.write_study_figures(
        str(tmp_path), "many", labels, cells
    )
    assert written == [str(tmp_path / "forgetting.png")]
    rows = study_figures._grid(study_figures.forgetting_panels(cells, labels))
    assert [len(row) for row in rows] == [4, 1]
