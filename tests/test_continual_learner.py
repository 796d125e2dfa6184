import json
import math

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import metrics
from keras_pam.lora import AdapterState

KEYS = ("images", "prompts", "responses")


class SnapshotTemporary(keras.callbacks.Callback):
    """Keeps the temporary adapter as `fit` leaves it."""

    def on_train_end(self, logs=None):
        self.state = AdapterState.from_model(self.model)


@pytest.fixture(scope="module")
def learned(tiny_preset, two_tasks):
    """A PAM learner after two tiny tasks, with what each step saw."""
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(tiny_preset, rank=4, align_every=2)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    globals_, temporaries, reports = [], [], []
    for task in two_tasks:
        snapshot = SnapshotTemporary()
        globals_.append(learner.global_state)
        reports.append(
            learner.learn_task(
                task.train,
                name=task.name,
                epochs=2,
                batch_size=8,
                callbacks=[snapshot],
                verbose=0,
            )
        )
        temporaries.append(snapshot.state)
    globals_.append(learner.global_state)
    return learner, globals_, temporaries, reports


def test_global_is_the_average_of_old_global_and_temporary(learned):
    learner, globals_, temporaries, _ = learned
    for t, temporary in enumerate(temporaries):
        old, new = globals_[t], globals_[t + 1]
        for path in new:
            np.testing.assert_allclose(
                new[path], (old[path] + temporary[path]) / 2, atol=1e-6
            )
    # The model's variables hold the global adapter after learning.
    live = AdapterState.from_model(learner)
    for path in live:
        np.testing.assert_array_equal(live[path], globals_[-1][path])
    # Training changed the adapter: the B factors are no longer zero.
    assert any(
        np.any(t) for p, t in globals_[-1].items() if p.endswith("kernel_b")
    )


def test_task_reports(learned):
    _, _, _, reports = learned
    for index, report in enumerate(reports, start=1):
        assert report.index == index
        assert len(report.history["loss"]) == 2
        assert 0.0 <= report.pre_merge_accuracy <= 1.0
        assert 0.0 <= report.post_merge_accuracy <= 1.0
        # 32 examples / batch 8 x 2 epochs = 8 batches, aligned every 2.
        assert len(report.reinitialised_counts) == 4
        assert report.num_reinitialised == sum(report.reinitialised_counts)
        assert report.num_entries > 0
        assert report.name in report.summary()
    # From task 2 on, the global B factors are non-zero and can conflict.
    assert 0.0 <= reports[1].misaligned_fraction_important <= 1.0


def test_evaluate_all_on_two_tasks(learned, tmp_path):
    learner, _, _, reports = learned
    report = learner.evaluate_all()
    assert report.task_names == ["color", "shape"]
    assert report.eval_task_names == ["color", "shape"]
    assert report.matrix.shape == (2, 2)
    assert np.all(np.isfinite(report.matrix))
    assert report.zero_shot.shape == (2,)
    np.testing.assert_allclose(
        report.pre_merge, [r.pre_merge_accuracy for r in reports]
    )
    expected = metrics.continual_metrics(
        report.matrix, report.zero_shot, report.pre_merge
    )
    assert report.metrics == expected
    assert set(report.metrics) == {"acc", "bwt", "fwt", "a_t", "a_m"}
    assert all(math.isfinite(v) for v in report.metrics.values())
    # The matrix's diagonal is each task's post-merge accuracy.
    np.testing.assert_allclose(
        np.diag(report.matrix), [r.post_merge_accuracy for r in reports]
    )
    # The matrix matches a fresh evaluation with the global adapter.
    for j, task in enumerate(report.eval_task_names):
        score = learner.scorer.score(learner.eval_tasks[task])
        assert score == pytest.approx(report.matrix[-1, j])
    loaded = json.loads(report.to_json(tmp_path / "report.json"))
    assert loaded["matrix"] == report.matrix.tolist()
    assert loaded["metrics"] == pytest.approx(report.metrics)
    assert len(loaded["task_reports"]) == 2
    assert "zero-shot" in report.format_matrix()
    report.plot(tmp_path / "matrix.png", title="PAM")
    assert (tmp_path / "matrix.png").stat().st_size > 1000


def test_learn_task_errors_leave_state_unchanged(learned, two_tasks):
    learner, globals_, _, _ = learned
    task = two_tasks[0]
    good = task.train
    bad_inputs = [
        ({"images": good["images"], "prompts": good["prompts"]}, "responses"),
        ({k: v[:0] for k, v in good.items()}, "empty"),
        (dict(good, images=good["images"][:, :16, :16]), "16x16"),
        (dict(good, images=good["images"][..., 0]), "shape"),
        (dict(good, responses=np.arange(len(good["prompts"]))), "strings"),
    ]
    for data, message in bad_inputs:
        with pytest.raises(ValueError, match=message):
            learner.learn_task(data, name="new", verbose=0)
    with pytest.raises(ValueError, match="already been learned"):
        learner.learn_task(good, name="color", verbose=0)
    with pytest.raises(ValueError, match="`epochs`"):
        learner.learn_task(good, name="new", epochs=0, verbose=0)
    with pytest.raises(ValueError, match="already registered"):
        learner.add_eval_task("color", task.test)
    assert learner.evaluate_all().task_names == ["color", "shape"]
    live = AdapterState.from_model(learner)
    for path in live:
        np.testing.assert_array_equal(live[path], globals_[-1][path])


def test_constructor_errors(tiny_preset):
    for kwargs, message in [
        ({"p": 0.0}, "`p`"),
        ({"align_every": 0}, "`align_every`"),
        ({"reinit": "noise"}, "`reinit`"),
        ({"scope": "row"}, "`scope`"),
        ({"merge": "mean"}, "Unknown merge"),
    ]:
        with pytest.raises(ValueError, match=message):
            ContinualLearner.from_preset(tiny_preset, rank=2, **kwargs)


def test_finetune_keeps_the_temporary_adapter_and_accepts_tf_data(
    tiny_preset, two_tasks
):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=2, align=False, merge=None
    )
    task = two_tasks[0]
    snapshot = SnapshotTemporary()
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: task.train[k] for k in ("images", "prompts", "responses")}
    )

    def test_examples():
        for i in range(len(task.test["prompts"])):
            yield {
                k: task.test[k][i] for k in ("images", "prompts", "responses")
            }

    report = learner.learn_task(
        dataset,
        name=task.name,
        eval_data=test_examples,
        batch_size=16,
        callbacks=[snapshot],
        verbose=0,
    )
    for path, tensor in learner.global_state.items():
        np.testing.assert_array_equal(tensor, snapshot.state[path])
    assert report.reinitialised_counts == []
    result = learner.evaluate_all()
    # Without a merge, A_t is the diagonal and A_m is not reported.
    assert result.metrics["a_t"] == pytest.approx(result.matrix[0, 0])
    assert set(result.metrics) == {"acc", "bwt", "fwt", "a_t"}


def test_call_returns_logits_of_the_global_adapter(learned, two_tasks):
    learner = learned[0]
    task = two_tasks[0]
    x, _, _ = learner.causal_lm.preprocessor(
        {k: task.test[k][:2] for k in ("images", "prompts", "responses")}
    )
    logits = learner(x)
    vocabulary = learner.causal_lm.backbone.vocabulary_size
    assert tuple(logits.shape) == (2, 24, vocabulary)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits),
        keras.ops.convert_to_numpy(learner.causal_lm(x)),
    )


def test_get_config_round_trip(learned):
    learner = learned[0]
    config = learner.get_config()
    assert config["rank"] == 4 and config["align_every"] == 2
    clone = ContinualLearner.from_config(config)
    assert clone.rank == 4
    assert len(clone.trainable_variables) == len(learner.trainable_variables)


def test_pam_learns_a_task_above_chance(tiny_preset):
    """A real (tiny) PaliGemma learns colours through LoRA under PAM."""
    from keras_pam import datasets

    keras.utils.set_random_seed(0)
    # Drawn on the test model's 8-pixel patches, a shape is small: the
    # random base needs more examples to name its colour.
    task = datasets.make_task(
        "color", 384, 48, image_size=32, seed=3, patch_size=8
    )
    learner = ContinualLearner.from_preset(tiny_preset, rank=8, align_every=4)
    learner.compile(optimizer=keras.optimizers.Adam(5e-3))
    report = learner.learn_task(
        task.train,
        name="color",
        eval_data=task.test,
        epochs=6,
        batch_size=16,
        verbose=0,
    )
    # Six colours: chance is 1/6.
    assert report.pre_merge_accuracy > 0.5
    assert report.history["loss"][-1] < report.history["loss"][0]
    assert report.num_reinitialised >= 0
