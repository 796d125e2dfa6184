"""The `keras-pam` command line, on the quick setting."""

import csv
import json
import os

import pytest

from keras_pam import cli


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    home = tmp_path_factory.mktemp("home")
    status = cli.main(
        ["run", "--quick", "--output", str(output), "--home", str(home)]
    )
    return status, output, home


def test_quick_run_writes_results(quick_run):
    status, output, home = quick_run
    assert status == 0
    for name in ("results.json", "results.csv", "matrices.csv", "table.txt"):
        assert (output / name).is_file(), name
    for method in cli.DEFAULT_METHODS:
        assert (output / f"matrix_{method}.png").stat().st_size > 0
    assert (home / "presets" / "tiny_pali_gemma_quick").is_dir()


def test_quick_run_results_content(quick_run):
    _, output, _ = quick_run
    results = json.loads((output / "results.json").read_text())
    assert list(results["methods"]) == list(cli.DEFAULT_METHODS)
    tasks = cli.QUICK["tasks"].split(",")
    for method, result in results["methods"].items():
        assert result["task_names"] == tasks
        assert len(result["matrix"]) == len(tasks)
        assert set(result["metrics"]) >= {"acc", "bwt", "fwt", "a_t"}
    assert "a_m" in results["methods"]["pam"]["metrics"]
    assert "a_m" not in results["methods"]["finetune"]["metrics"]
    with open(output / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(cli.DEFAULT_METHODS)
    assert rows[0]["a_m"] == ""  # Fine-tuning has no merge.
    assert 0.0 <= float(rows[2]["acc"]) <= 1.0


def test_quick_run_prints_table(quick_run):
    _, output, _ = quick_run
    table = (output / "table.txt").read_text().splitlines()
    assert table[0].split() == ["method", "ACC", "BWT", "FWT", "A_t", "A_m"]
    assert [line.split()[0] for line in table[1:]] == list(cli.DEFAULT_METHODS)
    assert len(table[1].split()) == 5  # finetune: A_m left blank.
    assert len(table[3].split()) == 6  # pam: all five metrics.


def test_format_table_blanks_missing_metrics():
    table = cli.format_table(
        {"zero-shot": {"acc": 0.25}, "pam": dict.fromkeys("abcde", None)}
    )
    lines = table.splitlines()
    assert lines[1].split() == ["zero-shot", "25.00"]


def test_unknown_method_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--methods", "pam,nope"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "Unknown method(s) 'nope'" in error
    assert "pam" in error


def test_parse_methods():
    assert cli.parse_methods("pam, finetune,pam") == ["pam", "finetune"]
    from keras_pam.strategies import STRATEGY_NAMES

    assert cli.parse_methods("all") == list(STRATEGY_NAMES)
    with pytest.raises(ValueError, match="Unknown method"):
        cli.parse_methods("sgd")


def test_unknown_task_and_order(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--tasks", "color,nope"])
    assert "Unknown task 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "--order", "order9"])
    assert "Unknown order 'order9'" in capsys.readouterr().err


def test_settings_flags_override_quick():
    args = cli.build_parser().parse_args(
        ["run", "--quick", "--rank", "2", "--order", "order2", "--p", "0.3"]
    )
    settings = cli.resolve_settings(args)
    assert settings["rank"] == 2
    assert settings["p"] == 0.3
    assert settings["tasks"] is None  # --order replaces the quick tasks.
    assert settings["order"] == "order2"
    assert settings["num_train"] == cli.QUICK["num_train"]


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "run" in capsys.readouterr().out


def test_main_module_exists():
    import keras_pam.__main__  # noqa: F401

    assert os.path.isfile(keras_pam.__main__.__file__)
