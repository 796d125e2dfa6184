"""The adapter that is reported is the adapter that is saved (issue 17)."""

import os

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import checkpoint
from keras_pam.lora import AdapterState


def learn_two(tiny_preset, two_tasks, strategy, run_dir=None):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, strategy=strategy, run_dir=run_dir
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    for task in two_tasks:
        learner.learn_task(task.train, name=task.name, batch_size=8, verbose=0)
    return learner


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


@pytest.fixture(scope="module")
def magmax(tiny_preset, two_tasks, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("magmax_run"))
    return learn_two(tiny_preset, two_tasks, "magmax", run_dir), run_dir


def test_magmax_saves_and_scores_the_merge_the_matrix_scored(
    magmax, two_tasks, tmp_path
):
    learner, run_dir = magmax
    merged = learner.strategy.merged
    assert learner.evaluation_adapter() is merged
    assert any(
        np.any(np.asarray(merged[k]) != np.asarray(learner.global_state[k]))
        for k in merged
    )
    path = os.fspath(tmp_path / "magmax.lora.h5")
    learner.save_adapter(path)
    assert_same(AdapterState.load(path, learner.causal_lm.backbone), merged)
    report = learner.evaluate_all()
    for column, task in enumerate(two_tasks):
        assert learner.evaluate_task(task.test) == report.matrix[-1, column]
    # The model holds the global adapter again afterwards.
    assert_same(AdapterState.from_model(learner), learner.global_state)
    # The checkpoint keeps the global adapter and the evaluated one.
    folder = checkpoint.latest(run_dir)
    backbone = learner.causal_lm.backbone
    assert_same(
        AdapterState.load(os.path.join(folder, "global.lora.h5"), backbone),
        learner.global_state,
    )
    assert_same(
        AdapterState.load(os.path.join(folder, "evaluation.lora.h5"), backbone),
        merged,
    )


def test_independent_saves_and_scores_each_task_adapter(
    tiny_preset, two_tasks, tmp_path
):
    learner = learn_two(tiny_preset, two_tasks, "independent")
    report = learner.evaluate_all()
    for column, task in enumerate(two_tasks):
        own = learner.strategy.task_adapters[task.name]
        assert learner.evaluation_adapter(task.name) is own
        path = os.fspath(tmp_path / f"{task.name}.lora.h5")
        learner.save_adapter(path, task_name=task.name)
        assert_same(AdapterState.load(path, learner.causal_lm.backbone), own)
        score = learner.evaluate_task(task.test, task_name=task.name)
        assert score == report.matrix[column, column]
    # Without a task, Independent deploys nothing: the initial adapter.
    assert_same(learner.evaluation_adapter(), learner.initial_state)


def test_a_merging_method_evaluates_with_its_global_adapter(
    tiny_preset, two_tasks, tmp_path
):
    learner = learn_two(tiny_preset, two_tasks[:1], "average")
    assert learner.evaluation_adapter() is learner.global_state
    path = os.fspath(tmp_path / "average.lora.h5")
    learner.save_adapter(path)
    assert_same(
        AdapterState.load(path, learner.causal_lm.backbone),
        learner.global_state,
    )
