"""`keras-pam study`: the named studies, a tiny study's files, resuming a
killed study, and the refusals.

The named studies are checked without training: each variant's flags
parse as `keras-pam run` flags and pass its checks. One module-scoped
tiny study (two variants of one method, `--quick` with fewer examples,
two seeds) runs one variant, then the whole study: the finished variant
is not run again, and the report's numbers are recomputed from the
variants' `results.json`.
"""

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_pam import datasets
from keras_pam import statistics
from keras_pam.experiment import cli
from keras_pam.experiment import grid
from keras_pam.experiment import studies
from keras_pam.experiment import study_files
from keras_pam.experiment import study_runner
from keras_pam.experiment.study_definition import StudyDefinition
from keras_pam.merging.training_settings import TESTBED
from keras_pam.strategies import STRATEGY_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SIZES = ("--num-train", "32", "--num-test", "8")


def tiny_study():
    """Tiny: PAM against fine-tuning, two variants of one method each."""
    return StudyDefinition(
        name="tiny",
        claim=studies._claim(tiny_study),
        variants={
            "ft": ("--methods", "finetune") + TINY_SIZES,
            "pam": ("--methods", "pam") + TINY_SIZES,
        },
        comparisons=(("pam/pam", "ft/finetune"),),
    )


def run_main(argv):
    """`cli.main(argv)`, its printed output, and the `run_study` calls."""
    calls = []
    real = grid.run_study

    def spy(settings, output=None, resume=False, **kwargs):
        calls.append((os.path.basename(output), resume))
        return real(settings, output=output, resume=resume, **kwargs)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(studies.STUDIES, "tiny", tiny_study)
        patch.setattr(grid, "run_study", spy)
        with contextlib.redirect_stdout(out):
            status = cli.main(argv)
    return status, out.getvalue(), calls


def refusal(argv, capsys):
    """The usage error of `cli.main(argv)`: its message on stderr."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(studies.STUDIES, "tiny", tiny_study)
        with pytest.raises(SystemExit) as raised:
            cli.main(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("study")
    argv = ["study", "tiny", "--quick", "--seeds", "0,1"]
    argv += ["--output", str(output)]
    # Killed after its first variant: run that one alone, then the study.
    first = run_main(argv + ["--variants", "ft"])
    second = run_main(argv)
    return output, argv, first, second


def read_results(output, variant):
    return json.loads((output / variant / "results.json").read_text())


def test_every_study_parses_as_keras_pam_run_flags():
    parser = cli.build_parser()
    run_flags = set(parser.run_parser._option_string_actions)
    for name in studies.STUDIES:
        study = studies.get_study(name)
        assert study.name == name
        # Each names where the paper makes its claim.
        assert re.match(r"(Tables?|Figs?\.|Sec\.) \d", study.claim), name
        for flags in study.variants.values():
            given = [f for f in flags if f.startswith("--")]
            assert set(given) <= run_flags, (name, given)
        for quick in (False, True):
            settings = study_runner.variant_settings(parser, study, quick=quick)
            assert list(settings) == list(study.variants)
            for variant, resolved in settings.items():
                methods = study.variant_methods(variant)
                assert resolved["methods"] == methods
                assert set(methods) <= set(STRATEGY_NAMES)
                assert resolved["quick"] == quick
        assert study.comparisons, name
        for pair in study.comparisons:
            assert set(pair) <= set(study.labels())


def test_default_grid_is_three_seeds_by_three_orders():
    parser = cli.build_parser()
    settings = study_runner.variant_settings(parser, studies.get_study("p"))
    for resolved in settings.values():
        assert resolved["seeds"] == [0, 1, 2]
        assert resolved["orders"] == ["order1", "order2", "order3"]
        assert resolved["num_train"] == 800 and resolved["epochs"] == 3
    assert settings["p0.3"]["p"] == 0.3 and settings["average"]["p"] == 0.5
    # The extended and video benchmarks keep their own sequence.
    generality = study_runner.variant_settings(
        parser, studies.get_study("generality"), seeds=[4]
    )
    assert generality["extended"]["orders"] == ["extended"]
    assert generality["video"]["orders"] == ["video"]
    assert generality["video"]["seeds"] == [4]


def test_methods_study_compares_pam_with_every_method_of_the_paper():
    study = studies.get_study("methods")
    methods = [
        method
        for variant in study.variants
        for method in study.variant_methods(variant)
    ]
    assert methods == list(studies.PAPER_TABLE_METHODS)
    assert len(methods) == 14 and set(methods) <= set(STRATEGY_NAMES)
    # One method a variant, so a stopped study keeps what it finished.
    assert all(len(study.variant_methods(v)) == 1 for v in study.variants)
    assert list(study.comparisons) == [
        ("pam/pam", f"{variant}/{method}")
        for variant, method in zip(study.variants, methods)
        if method != "pam"
    ]


def test_complement_reports_every_task_of_the_orders():
    # Fig. 7 is per task: each task of the three orders gets its report.
    study = studies.get_study("complement")
    tasks = {t for order in datasets.ORDERS.values() for t in order}
    assert set(study.reported_tasks) == tasks
    assert len(study.reported_tasks) == len(tasks)


def test_every_registered_method_is_in_some_study():
    covered = set()
    for name in studies.STUDIES:
        study = studies.get_study(name)
        for variant in study.variants:
            covered |= set(study.variant_methods(variant))
    assert covered == set(STRATEGY_NAMES)


def test_schedule_keeps_the_papers_ratios_around_the_testbed_default():
    scale = TESTBED.align_every / 100
    assert studies.SCHEDULE == {
        paper: round(int(paper) * scale) for paper in ("10", "100", "300")
    }
    study = studies.get_study("schedule")
    assert list(study.variants) == ["every2", "every20", "every60"]


def test_track_misalignment_reaches_the_variants():
    parser = cli.build_parser()
    timing = studies.get_study("alignment_timing")
    settings = study_runner.variant_settings(parser, timing, quick=True)
    assert settings["all"]["track_misalignment"] is True
    reinit = studies.get_study("reinit")
    # Off, the settings have no key: folders run before the flag resume.
    for variant in study_runner.variant_settings(parser, reinit).values():
        assert "track_misalignment" not in variant
    given = study_runner.variant_settings(
        parser, reinit, track_misalignment=True
    )
    assert all(variant["track_misalignment"] for variant in given.values())


def test_bad_study_name_lists_the_known_ones(capsys):
    message = refusal(["study", "tables"], capsys)
    assert "Unknown study 'tables'" in message
    for name in studies.STUDIES:
        assert f"{name}: " in message
    with pytest.raises(ValueError, match="The known studies"):
        studies.get_study("tables")


def test_bad_variant_is_refused(capsys, tmp_path):
    argv = ["study", "reinit", "--variants", "global,one"]
    message = refusal(argv + ["--output", str(tmp_path)], capsys)
    assert "no variant 'one'" in message and "global, zero" in message
    assert not os.listdir(tmp_path)  # Refused before any work.


def test_script_is_the_command(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, KERAS_BACKEND="jax")
    done = subprocess.run(
        [sys.executable, "benchmarks/study.py", "nope"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "Unknown study 'nope'" in done.stderr
    assert "alignment_timing: " in done.stderr


def test_killed_study_skips_its_finished_variant(tiny_run):
    output, _, first, second = tiny_run
    assert first[0] == 0 and second[0] == 0
    assert first[2] == [("ft", False)]
    assert "no timings yet" in first[1]
    # The second run ran only the unfinished variant, with an ETA from the
    # first's cells.
    assert second[2] == [("pam", False)]
    assert "Variant 1/2 'ft'" in second[1] and "finished before" in second[1]
    assert "about" in second[1] and "left for 2 cells" in second[1]
    assert "[pam custom seed1 2/2]" in second[1]


def test_unfinished_variant_resumes(tiny_run):
    output, argv, _, _ = tiny_run
    results = output / "pam" / "results.json"
    before = json.loads(results.read_text())
    # Killed after its cells, before its report.
    results.unlink()
    status, printed, calls = run_main(argv)
    assert status == 0
    assert calls == [("pam", True)]
    assert "[pam custom seed0] done before" in printed
    after = json.loads(results.read_text())
    assert after["cells"] == before["cells"]


def test_study_files(tiny_run):
    output, argv, _, _ = tiny_run
    names = set(os.listdir(output))
    assert {"ft", "pam", "study.json", "table.md", "differences.md"} <= names
    assert (output / "acc_bwt.png").stat().st_size > 1000
    assert (output / "forgetting.png").stat().st_size > 1000
    # Its cells carry no misalignment curves: no figure of them.
    assert "misalignment.png" not in names
    command = (output / "command.txt").read_text().strip()
    assert command == "keras-pam " + " ".join(argv)
    env = json.loads((output / "environment.json").read_text())
    assert {"python", "keras", "keras_hub", "backend", "backend_version"} <= (
        set(env)
    )
    assert env["backend"] == keras.backend.backend()
    assert env["cpu_count"] >= 1
    record = json.loads((output / "study.json").read_text())
    assert record["study"] == "tiny"
    assert record["variants"]["pam"]["num_train"] == 32


def test_table_holds_every_label_over_its_cells(tiny_run):
    output, _, _, _ = tiny_run
    table = (output / "table.md").read_text(encoding="utf-8")
    assert "PAM against fine-tuning" in table
    rows = {
        tuple(cell.strip() for cell in line.strip("|").split("|")[:3]): line
        for line in table.splitlines()
        if line.startswith("| ft ") or line.startswith("| pam ")
    }
    # Two tables: over cells (2 cells) and over orders (1 order).
    assert set(rows) == {
        ("ft", "finetune", "2"),
        ("pam", "pam", "2"),
        ("ft", "finetune", "1"),
        ("pam", "pam", "1"),
    }
    cells = read_results(output, "pam")["cells"]
    acc = [c["metrics"]["acc"] for c in cells]
    expected = f"{100 * np.mean(acc):.2f} ± {100 * np.std(acc, ddof=1):.2f}"
    assert rows[("pam", "pam", "2")].split("|")[4].strip() == expected
    # One order: a mean and no std over orders.
    assert "±" not in rows[("pam", "pam", "1")].split("|")[4]


def test_differences_are_paired_over_the_same_cells(tiny_run):
    output, _, _, _ = tiny_run
    text = (output / "differences.md").read_text(encoding="utf-8")
    assert "## pam/pam - ft/finetune" in text
    pam = read_results(output, "pam")["cells"]
    ft = read_results(output, "ft")["cells"]
    for key, label in (("acc", "ACC"), ("bwt", "BWT")):
        d = statistics.paired_difference(
            [c["metrics"][key] for c in pam], [c["metrics"][key] for c in ft]
        )
        line = [
            row
            for row in text.splitlines()
            if row.startswith(f"pam/pam - ft/finetune  {label} ")
        ]
        assert len(line) == 1 and "95% CI, n=2" in line[0]
        verdict = "resolved" if d["resolved"] else "not resolved"
        assert line[0].endswith(f": {verdict}")
        assert f"{100 * d['mean']:+.2f}" in line[0]
    assert "pam/pam vs ft/finetune: " in text


def test_changed_setting_is_refused(tiny_run, capsys):
    output, argv, _, _ = tiny_run
    study_json = (output / "study.json").read_text()
    changed = [a if a != "0,1" else "0" for a in argv]
    message = refusal(changed, capsys)
    assert "started with other settings" in message
    assert "seeds is [0] here but [0, 1] there" in message
    # A variant's own flag, changed in the study's definition.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            sys.modules[__name__],
            "TINY_SIZES",
            ("--num-train", "40", "--num-test", "8"),
        )
        message = refusal(argv, capsys)
    assert "variant 'ft': num_train is 40 here but 32 there" in message
    assert (output / "study.json").read_text() == study_json
    message = refusal(
        ["study", "reinit", "--quick", "--output", str(output)], capsys
    )
    assert "holds the study 'tiny', not 'reinit'" in message


def test_differences_verdicts_in_words():
    def cells(method, accs):
        return [
            {
                "order": "order1",
                "seed": seed,
                "method": method,
                "metrics": {"acc": acc, "bwt": -0.1, "fwt": 0.0, "a_t": 0.5},
            }
            for seed, acc in enumerate(accs)
        ]

    def result(method, accs):
        return {
            "settings": {"orders": ["order1"], "seeds": [0, 1, 2]},
            "cells": cells(method, accs),
        }

    study = StudyDefinition(
        name="words",
        claim="Words.",
        variants={"a": ("--methods", "pam"), "b": ("--methods", "average")},
        comparisons=(("a/pam", "b/average"), ("b/average", "a/pam")),
    )
    results = {
        "a": result("pam", [0.6, 0.62, 0.61]),
        "b": result("average", [0.5, 0.5, 0.5]),
    }
    text = study_files.format_study_differences(study, results)
    acc = [row for row in text.splitlines() if "ACC" in row and "CI" in row]
    assert len(acc) == 2 and all(row.endswith(": resolved") for row in acc)
    assert "a/pam has the higher ACC (by 11.00 points)" in text
    # BWT is the same in every cell: a zero difference, not resolved.
    assert "BWT difference is not resolved" in text
    table = study_files.format_study_table(study, results)
    assert "| a | pam | 3 | 61.00 ± 1.00 |" in table
    # A variant not run yet is named, not reported.
    partial = study_files.format_study_differences(study, {"a": results["a"]})
    assert partial.count("Not run yet") == 2
    one = study_files.label_summaries(cells("x", [0.4]), "x")
    assert one["n_cells"] == 1 and math.isnan(one["cells"]["acc"]["std"])
