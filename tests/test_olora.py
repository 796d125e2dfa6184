"""O-LoRA: a LoRA of the full rank per task, orthogonal to the earlier
ones, and its settings checked before any method of a study runs."""

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import cli
from keras_pam import experiment
from keras_pam import strategies
from keras_pam.strategies import olora
from keras_pam.strategies.registry import check_strategy

# The CLI's default rank and the default sequence's length (order1): the
# rank is not a multiple of the number of tasks.
RANK = cli.DEFAULTS["rank"]
NUM_TASKS = 6


def numpy_penalty(past_a_factors, a_factors):
    """`sum_layers sum |past^T A|`, rank last, in float64."""
    total = 0.0
    for past, a in zip(past_a_factors, a_factors):
        past = np.asarray(past, "float64").reshape(-1, past.shape[-1])
        a = np.asarray(a, "float64").reshape(-1, a.shape[-1])
        total += np.abs(past.T @ a).sum()
    return total


@pytest.fixture(scope="module")
def olora_run(tiny_preset, two_tasks):
    """Two of six tasks at the default rank: the learner, its O-LoRA and
    the stored LoRAs after each task."""
    keras.utils.set_random_seed(0)
    strategy = strategies.get_strategy("olora", num_tasks=NUM_TASKS)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=RANK, strategy=strategy, seed=0
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    stored = []
    for task in two_tasks:
        learner.learn_task(
            task.train, name=task.name, epochs=1, batch_size=8, verbose=0
        )
        stored.append(strategy.get_state()["past"])
    return learner, strategy, stored


def slot(path, value, index):
    """The rank columns (rows of `B`) of task `index + 1`."""
    columns = slice(index * RANK, (index + 1) * RANK)
    if path.endswith(olora.PAST_B_NAME):
        return value[columns]
    return value[..., columns]


def test_default_rank_and_six_tasks_run(olora_run):
    learner, strategy, stored = olora_run
    report = learner.evaluate_all()
    assert report.matrix.shape == (2, 2)
    assert np.all(np.isfinite(report.matrix))
    assert set(report.metrics) == {"acc", "bwt", "fwt", "a_t"}
    past = stored[-1]
    assert len(past) == 2 * len(strategy.layers)
    for path, value in past.items():
        # Room for six LoRAs of the full rank: the rank is not divided.
        axis = 0 if path.endswith(olora.PAST_B_NAME) else -1
        assert value.shape[axis] == NUM_TASKS * RANK
        # The two learned tasks hold a LoRA each, the others nothing.
        if path.endswith(olora.PAST_B_NAME):
            assert np.any(slot(path, value, 0))
            assert np.any(slot(path, value, 1))
        assert not np.any(value[..., 2 * RANK :] if axis else value[2 * RANK :])
    # The learner's own adapter adds nothing on top of the stored LoRAs.
    for path, value in learner.global_state.items():
        if path.endswith("lora_kernel_b"):
            assert not np.any(value)


def test_earlier_loras_are_unchanged_by_later_tasks(olora_run):
    _, _, (after_first, after_second) = olora_run
    for path, value in after_first.items():
        np.testing.assert_array_equal(
            slot(path, after_second[path], 0), slot(path, value, 0)
        )
        # Task 1's own LoRA was not yet there.
        assert not np.any(slot(path, value, 1))


def test_model_sums_the_stored_loras(olora_run):
    learner, strategy, _ = olora_run
    rng = np.random.default_rng(0)
    checked = set()
    for layer in strategy.layers:
        kind = type(layer).__name__
        if kind in checked:
            continue
        checked.add(kind)
        kernel = keras.ops.convert_to_numpy(layer._kernel).astype("float64")
        a = keras.ops.convert_to_numpy(layer.olora_past_a).astype("float64")
        b = keras.ops.convert_to_numpy(layer.olora_past_b).astype("float64")
        live_a = keras.ops.convert_to_numpy(layer.lora_kernel_a)
        live_b = keras.ops.convert_to_numpy(layer.lora_kernel_b)
        scale = layer.lora_alpha / RANK
        # Sum of every task's LoRA `A_i B_i`, plus the learner's own.
        delta = scale * (
            sum(
                slot("a", a, i) @ slot(olora.PAST_B_NAME, b, i)
                for i in range(NUM_TASKS)
            )
            + live_a.astype("float64") @ live_b.astype("float64")
        )
        if kind == "Dense":
            x = rng.normal(size=(2, kernel.shape[0])).astype("float32")
            expected = x @ (kernel + delta)
        else:
            equation = layer.equation
            x_spec, rest = equation.split(",")
            kernel_spec = rest.split("->")[0]
            # Token axes (not in the kernel) of size 3, the others the
            # kernel's.
            x_shape = [
                kernel.shape[kernel_spec.index(c)] if c in kernel_spec else 3
                for c in x_spec
            ]
            x = rng.normal(size=x_shape).astype("float32")
            expected = np.einsum(equation, x, kernel + delta)
        if layer.bias is not None:
            expected = expected + keras.ops.convert_to_numpy(layer.bias)
        got = keras.ops.convert_to_numpy(layer(x))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert checked == {"Dense", "EinsumDense"}


def test_orthogonality_loss_matches_numpy():
    rng = np.random.default_rng(1)
    # A dense layer's factors and an einsum layer's (rank last).
    past = [rng.normal(size=(5, 6)), rng.normal(size=(2, 4, 6))]
    current = [rng.normal(size=(5, 2)), rng.normal(size=(2, 4, 2))]
    past = [p.astype("float32") for p in past]
    current = [c.astype("float32") for c in current]
    got = olora.orthogonality_loss(past, current)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got),
        numpy_penalty(past, current),
        rtol=1e-5,
    )


def test_penalty_is_normalised_as_the_task_loss(olora_run, two_tasks):
    learner, strategy, _ = olora_run
    # The fresh LoRA a third task would start from.
    task = strategies.TaskContext(name="third", index=3, examples={})
    strategy.start_state(task).assign_to(learner)
    try:
        weights = np.zeros((4, 10), "float32")
        weights[:, 7:] = 1.0  # 3 answer tokens of 10.
        got = strategy.extra_loss({}, None, None, weights)
        past = [
            keras.ops.convert_to_numpy(layer.olora_past_a)
            for layer in strategy.layers
        ]
        current = [
            keras.ops.convert_to_numpy(layer.lora_kernel_a)
            for layer in strategy.layers
        ]
    finally:
        learner.global_state.assign_to(learner)
    # Keras's task loss is the answer tokens' sum over batch x length.
    expected = 0.5 * (12 / 40) * numpy_penalty(past, current)
    assert expected > 0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), expected, rtol=1e-4
    )


def second_task_penalty(tiny_preset, two_tasks, weight):
    """A two-task O-LoRA run of rank 4 with penalty `weight`.

    Returns:
        `(trained, fresh, first)`: `sum |A_1^T A_2|` over the layers for
        task 2's trained `A` and for the `A` it started from, and task 1's
        `A` factors.
    """
    rank = 4
    keras.utils.set_random_seed(0)
    strategy = olora.OLoRA(num_tasks=2, weight=weight)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=rank, strategy=strategy, seed=0
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in two_tasks:
        learner.learn_task(
            task.train, name=task.name, epochs=3, batch_size=8, verbose=0
        )
    past = [
        keras.ops.convert_to_numpy(layer.olora_past_a)
        for layer in strategy.layers
    ]
    first = [a[..., :rank] for a in past]
    second = [a[..., rank : 2 * rank] for a in past]
    task = strategies.TaskContext(name="second", index=2, examples={})
    start = strategy.start_state(task)
    fresh = [start[layer.lora_kernel_a.path] for layer in strategy.layers]
    return (
        numpy_penalty(first, second),
        numpy_penalty(first, fresh),
        first,
    )


def test_training_with_the_penalty_orthogonalises_the_new_a(
    tiny_preset, two_tasks
):
    """Inside the train step the penalty's gradient reaches the new `A`:
    trained with it, task 2's `A` ends more orthogonal to task 1's than
    it started, and than trained without it from the same start."""
    penalised, fresh, first = second_task_penalty(tiny_preset, two_tasks, 0.5)
    free, fresh_free, first_free = second_task_penalty(
        tiny_preset, two_tasks, 0.0
    )
    # The same seed: task 1 (no earlier LoRA, so no penalty) trains alike,
    # and task 2 starts from the same `A` in both runs.
    for a, b in zip(first, first_free):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert fresh == pytest.approx(fresh_free, rel=1e-6)
    assert fresh > 0
    assert penalised < 0.5 * fresh
    assert penalised < 0.5 * free


def test_any_rank_and_number_of_tasks_is_accepted():
    for rank, num_tasks in [(8, 6), (7, 3), (1, 10), (32, 6)]:
        strategy = strategies.get_strategy("olora", num_tasks=num_tasks)
        strategy.check_settings(rank=rank, num_tasks=num_tasks)
        check_strategy("olora", rank=rank, num_tasks=num_tasks)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="num_tasks"):
        strategies.get_strategy("olora")
    with pytest.raises(ValueError, match="weight"):
        olora.OLoRA(6, weight=-1.0)
    with pytest.raises(ValueError, match="room for `num_tasks`=2"):
        strategies.OLoRA(2).check_settings(rank=8, num_tasks=3)
    with pytest.raises(ValueError, match="rank"):
        check_strategy("olora", rank=0, num_tasks=2)
    with pytest.raises(ValueError, match="room for `num_tasks`=2"):
        check_strategy(strategies.OLoRA(2), rank=8, num_tasks=3)


def test_study_settings_are_checked_for_every_method_first(monkeypatch):
    # `keras-pam run --methods all`: every method passes at the defaults.
    settings = cli.resolve_settings(
        cli.build_parser().parse_args(["run", "--methods", "all"])
    )
    assert "olora" in settings["methods"]
    experiment.check_settings(settings)
    # A method that cannot run stops the study before its first method.
    with pytest.raises(ValueError, match="Method 'pam2'"):
        experiment.check_settings(dict(settings, methods=["finetune", "pam2"]))
    with pytest.raises(ValueError, match="Method 'olora'.*rank"):
        experiment.check_settings(dict(settings, rank=0))

    def refuse(self, rank=None, num_tasks=None):
        raise ValueError("refused by the check")

    def run_study(*args, **kwargs):
        raise AssertionError("a method ran before the settings were checked")

    monkeypatch.setattr(strategies.OLoRA, "check_settings", refuse)
    monkeypatch.setattr(cli, "run_study", run_study)
    with pytest.raises(SystemExit) as raised:
        cli.main(["run", "--quick", "--methods", "finetune,olora"])
    assert raised.value.code == 2


def test_a_resumed_run_has_the_stored_loras(tiny_preset, two_tasks, tmp_path):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset,
        rank=4,
        strategy=strategies.OLoRA(3),
        seed=0,
        run_dir=str(tmp_path),
    )
    eval_tasks = {task.name: task.test for task in two_tasks}
    for name, data in eval_tasks.items():
        learner.add_eval_task(name, data)
    task = two_tasks[0]
    learner.learn_task(
        task.train, name=task.name, epochs=1, batch_size=8, verbose=0
    )
    saved = learner.strategy.get_state()["past"]
    row = learner.evaluate_all().matrix[-1]
    resumed = ContinualLearner.resume(str(tmp_path), eval_tasks=eval_tasks)
    restored = resumed.strategy.get_state()["past"]
    assert set(restored) == set(saved)
    assert any(np.any(v) for v in saved.values())
    for path, value in saved.items():
        np.testing.assert_array_equal(restored[path], value)
    # The resumed model scores what the run scored.
    name = two_tasks[1].name
    np.testing.assert_array_equal(
        resumed.eval_tasks.score(name, resumed.global_state),
        row[learner.eval_task_names.index(name)],
    )
