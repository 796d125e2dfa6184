"""`RunRecord` and `RunFolder`, and a run folder written by keras_pam
0.1.0 (`tests/data/run_folder_v1`, see `make_run_folder_v1.py`) that still
resumes."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam.report import TaskReport
from keras_pam.run_folder import RunFolder
from keras_pam.run_record import RunRecord

OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "run_folder_v1")


def test_run_record_round_trip_and_report():
    record = RunRecord(zero_shot={"a": 0.1, "b": 0.2})
    record.add_task("a", 0.9, {"a": 0.8, "b": 0.3})
    report = TaskReport(
        "a",
        1,
        {"loss": [1.0]},
        0.9,
        0.8,
        2,
        [2],
        9,
        misaligned_fraction_all=0.3,
        misaligned_fraction_important=0.5,
    )
    record.task_reports.append(report)
    record.add_task("b", 0.7, {"a": 0.6, "b": 0.5})
    tree = record.to_tree(["b", "a"])
    assert tree["eval_task_names"] == ["b", "a"]
    restored = RunRecord.from_tree(json.loads(json.dumps(tree)))
    assert restored == record
    report = restored.report(["b", "a"], ("acc", "bwt"))
    assert report.eval_task_names == ["a", "b"]  # Learned ones first.
    np.testing.assert_array_equal(report.matrix, [[0.8, 0.3], [0.6, 0.5]])
    assert set(report.metrics) == {"acc", "bwt"}
    assert report.metrics["acc"] == pytest.approx(0.55)
    unlearned = RunRecord(zero_shot={"a": 0.1}).report(["a"], ("acc",))
    assert unlearned.metrics is None and unlearned.matrix.shape == (0, 1)


def test_task_report_names_both_misaligned_fractions():
    report = TaskReport.with_diagnostics(
        {
            "misaligned_fraction_all": 0.294,
            "misaligned_fraction_important": 0.014,
        },
        name="b",
        index=2,
        history={"loss": [0.5]},
    )
    assert report.misaligned_fraction_all == 0.294
    assert report.misaligned_fraction_important == 0.014
    assert report.diagnostics == {}
    assert "misaligned 29.4% of all entries, 1.4% of important ones" in (
        report.summary()
    )
    tree = json.loads(json.dumps(report.to_dict()))
    assert TaskReport.from_dict(tree) == report
    # Unmeasured (NaN, written as null) reads back as NaN and is left out.
    first = TaskReport("a", 1, {"loss": [0.5]}, misaligned_fraction_all=0.2)
    restored = TaskReport.from_dict(json.loads(json.dumps(first.to_dict())))
    assert math.isnan(restored.misaligned_fraction_important)
    assert math.isnan(restored.pre_merge_accuracy)
    assert "misaligned 20.0% of all entries (" in restored.summary()
    assert "'a': loss 0.5000, pre-merge" in restored.summary()
    untrained = TaskReport("a", 1, {}, pre_merge_accuracy=0.5)
    assert "'a': not trained, pre-merge acc 0.500" in untrained.summary()


def test_a_task_report_of_the_first_format_reads_its_fraction():
    # The one fraction of 0.1.0 was over the important entries.
    folder = os.path.join(OLD_RUN, "checkpoints", "task_0001")
    with open(os.path.join(folder, "state.json")) as f:
        (old,) = json.load(f)["__dict__"]["task_reports"]
    old = dict(old["__dict__"], history=old["__dict__"]["history"]["__dict__"])
    assert "misaligned_fraction" in old
    report = TaskReport.from_dict(old)
    assert report.misaligned_fraction_important == old["misaligned_fraction"]
    assert math.isnan(report.misaligned_fraction_all)
    assert "misaligned 0.0% of important entries" in report.summary()


def test_run_folder_refuses_another_configuration(tmp_path):
    path = str(tmp_path / "run")
    RunFolder(path, {"rank": 4})
    RunFolder(path, {"rank": 4})
    with pytest.raises(ValueError, match=r"another configuration.*'rank'"):
        RunFolder(path, {"rank": 2})
    with pytest.raises(ValueError, match="not a run folder"):
        RunFolder.read(str(tmp_path))


def _old_arrays(folder, tree_key):
    """An adapter of the old checkpoint, read with numpy and json only."""
    with open(os.path.join(folder, "state.json")) as f:
        skeleton = json.load(f)["__dict__"][tree_key]["__adapter__"]
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    return {k: arrays[v["__array__"]] for k, v in skeleton["__dict__"].items()}


def test_a_run_folder_of_the_first_format_resumes(
    tiny_preset, two_tasks, tmp_path
):
    run_dir = str(tmp_path / "run")
    shutil.copytree(OLD_RUN, run_dir)
    folder = os.path.join(run_dir, "checkpoints", "task_0001")
    with open(os.path.join(folder, "state.json")) as f:
        old = json.load(f)["__dict__"]
    from keras_hub.models import PaliGemmaCausalLM

    causal_lm = PaliGemmaCausalLM.from_preset(tiny_preset)
    tests = {task.name: task.test for task in two_tasks}
    learner = ContinualLearner.resume(
        run_dir, eval_tasks=tests, causal_lm=causal_lm
    )
    assert learner.learned_task_names == ["color"]
    assert learner.eval_task_names == ["color", "shape"]
    assert learner.optimizer.learning_rate.numpy() == pytest.approx(1e-2)
    assert learner.strategy.name == "pam"
    assert learner.strategy.get_config()["align_every"] == 3
    for key, value in _old_arrays(folder, "global").items():
        np.testing.assert_array_equal(learner.global_state[key], value)
    for key, value in _old_arrays(folder, "initial").items():
        np.testing.assert_array_equal(learner.initial_state[key], value)
    report = learner.evaluate_all()
    row = old["rows"][0]["__dict__"]
    np.testing.assert_array_equal(report.matrix, [[row["color"], row["shape"]]])
    (task_report,) = report.task_reports
    assert task_report.name == "color"
    assert task_report.reinitialised_counts == [0, 0]
    # Its one fraction was over the important entries.
    old_report = old["task_reports"][0]["__dict__"]
    assert (
        task_report.misaligned_fraction_important
        == (old_report["misaligned_fraction"])
    )
    assert math.isnan(task_report.misaligned_fraction_all)
    # Task 2 restarts from its backup after epoch 1.
    backup = os.path.join(run_dir, "task_backup", "checkpoints", "epoch_0001")
    with open(os.path.join(backup, "state.json")) as f:
        first_loss = json.load(f)["__dict__"]["history"]["__dict__"]["loss"]
    shape = two_tasks[1]
    second = learner.learn_task(
        shape.train, name=shape.name, epochs=2, batch_size=8, verbose=0
    )
    assert second.history["loss"][:1] == first_loss
    assert len(second.history["loss"]) == 2
    assert all(math.isfinite(v) for v in second.history["loss"])
    assert learner.learned_task_names == ["color", "shape"]
    assert not os.path.exists(os.path.join(run_dir, "task_backup"))
    with open(os.path.join(run_dir, "LATEST")) as f:
        assert f.read().strip().endswith("task_0002")
