"""L2 pull: averaging whose train step adds `weight * sum (W' - G)^2`, its
settings, its run folder, and the `regularisation` study."""

import math

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import cli
from keras_pam import data as data_lib
from keras_pam import experiment
from keras_pam import strategies
from keras_pam.experiment import studies
from keras_pam.learner.lora_model import LoRAModel
from keras_pam.learner.training import train_step_key
from keras_pam.lora import AdapterState
from keras_pam.strategies import l2_pull
from keras_pam.strategies.registry import check_strategy

RANK = 4
# Strong enough on the tiny model that the pull shows after a few steps.
WEIGHT = 1.0


def new_learner(preset, strategy, **kwargs):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        preset, rank=RANK, strategy=strategy, seed=0, **kwargs
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    return learner


def squared_distance(a, b):
    return sum(
        float(np.sum((np.asarray(a[p], "float64") - b[p]) ** 2)) for p in a
    )


def two_task_run(preset, tasks, strategy, **kwargs):
    """Both tasks learned; the reports and the global adapter before and
    after each task."""
    learner = new_learner(preset, strategy, **kwargs)
    globals_ = [learner.global_state.numpy()]
    reports = []
    for task in tasks:
        reports.append(
            learner.learn_task(
                task.train, name=task.name, epochs=2, batch_size=8, verbose=0
            )
        )
        globals_.append(learner.global_state.numpy())
    return learner, reports, globals_


@pytest.fixture(scope="module")
def pulled_and_free(tiny_preset, two_tasks):
    """The same seed and data, with the pull and without it (averaging)."""
    pulled = two_task_run(tiny_preset, two_tasks, l2_pull.L2Pull(WEIGHT))
    free = two_task_run(tiny_preset, two_tasks, strategies.Average())
    return pulled, free


def test_l2_pull_loss_matches_numpy():
    rng = np.random.default_rng(0)
    anchors = [rng.normal(size=(5, 3)), rng.normal(size=(2, 4, 3))]
    factors = [rng.normal(size=(5, 3)), rng.normal(size=(2, 4, 3))]
    anchors = [a.astype("float32") for a in anchors]
    factors = [f.astype("float32") for f in factors]
    expected = sum(
        float(np.sum((f - a) ** 2)) for a, f in zip(anchors, factors)
    )
    got = l2_pull.l2_pull_loss(anchors, factors)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), expected, rtol=1e-5
    )
    same = l2_pull.l2_pull_loss(anchors, anchors)
    assert float(keras.ops.convert_to_numpy(same)) == 0.0


def test_penalty_is_zero_at_the_start_and_positive_after_a_step(
    tiny_preset, two_tasks
):
    strategy = l2_pull.L2Pull(WEIGHT)
    learner = new_learner(tiny_preset, strategy)
    start = learner.global_state.numpy()
    task = strategies.TaskContext(
        name="first", index=1, examples={}, previous_global=start
    )
    strategy.callbacks(task)  # The anchor holds `G`, as `learn_task` sets.
    weights = np.zeros((4, 10), "float32")
    weights[:, 7:] = 1.0  # 3 answer tokens of 10.
    at_start = strategy.extra_loss({}, None, None, weights)
    assert float(keras.ops.convert_to_numpy(at_start)) == 0.0
    examples = two_tasks[0].train
    dataset = data_lib.training_dataset(
        examples, 8, learner.causal_lm.preprocessor, shuffle=False
    )
    # One optimizer step of Keras's `fit`, as `learn_task` runs it.
    LoRAModel.fit(learner, dataset, epochs=1, steps_per_epoch=1, verbose=0)
    trained = AdapterState.from_model(learner).numpy()
    after = strategy.extra_loss({}, None, None, weights)
    # Keras's task loss is the answer tokens' sum over batch x length.
    expected = WEIGHT * (12 / 40) * squared_distance(trained, start)
    assert expected > 0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(after), expected, rtol=1e-4
    )


# Slow (two fits); `test_penalty_is_zero_at_the_start_and_positive_after_a_step`
# checks the same zero at the start in every run.
@pytest.mark.large
def test_first_step_loss_is_the_task_loss_alone(tiny_preset, two_tasks):
    """Inside the train step the pull adds nothing while `W' = G`: a task
    of one full batch logs the loss averaging logs."""
    examples = two_tasks[0].train
    size = len(examples["prompts"])
    losses = []
    for strategy in (l2_pull.L2Pull(WEIGHT), strategies.Average()):
        learner = new_learner(tiny_preset, strategy)
        report = learner.learn_task(
            examples, name="first", batch_size=size, shuffle=False, verbose=0
        )
        losses.append(report.history["loss"][0])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_the_pull_keeps_the_adapter_nearer_the_global_one(pulled_and_free):
    (_, pulled, pulled_globals), (_, free, free_globals) = pulled_and_free
    # The same seed: both runs start from the same `G_0`.
    for path in pulled_globals[0]:
        np.testing.assert_array_equal(
            pulled_globals[0][path], free_globals[0][path]
        )
    for t, report in enumerate(pulled):
        # Averaging: `G_t = (G_{t-1} + W') / 2`, so `W' - G_{t-1}` is
        # twice the step of the global adapter.
        free_distance = 2 * math.sqrt(
            squared_distance(free_globals[t + 1], free_globals[t])
        )
        pulled_distance = report.diagnostics["l2_distance_to_global"]
        np.testing.assert_allclose(
            pulled_distance,
            2
            * math.sqrt(
                squared_distance(pulled_globals[t + 1], pulled_globals[t])
            ),
            rtol=1e-5,
        )
        assert 0 < pulled_distance < 0.9 * free_distance, t


def test_task_report_carries_the_misaligned_fractions(pulled_and_free):
    (learner, pulled, globals_), _ = pulled_and_free
    second = pulled[1]
    assert 0 <= second.misaligned_fraction_all <= 1
    assert 0 <= second.misaligned_fraction_important <= 1
    assert second.to_dict()["diagnostics"]["l2_distance_to_global"] > 0
    assert "misaligned" in second.summary()
    # A merging method: A_m (after the merge) is reported too.
    assert "a_m" in learner.strategy.reported_metrics


def test_bad_weights_are_refused(capsys):
    for weight in (0, 0.0, -1.0, math.nan, math.inf, True, "0.1", None):
        with pytest.raises(ValueError, match="weight"):
            l2_pull.L2Pull(weight)
    with pytest.raises(ValueError, match="weight"):
        strategies.get_strategy("l2-pull", l2_weight=-0.5)
    settings = cli.resolve_settings(
        cli.build_parser().parse_args(["run", "--methods", "l2-pull"])
    )
    with pytest.raises(ValueError, match="Method 'l2-pull'.*weight"):
        experiment.check_settings(dict(settings, l2_weight=0.0))
    for text in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit) as raised:
            cli.build_parser().parse_args(
                ["run", "--methods", "l2-pull", "--l2-weight", text]
            )
        assert raised.value.code == 2
        assert "--l2-weight" in capsys.readouterr().err


def test_config_round_trip():
    strategy = l2_pull.L2Pull(0.25)
    config = strategy.get_config()
    assert config == {"merge": "average", "weight": 0.25}
    rebuilt = l2_pull.L2Pull.from_config(config)
    assert rebuilt.get_config() == config
    entry = {"name": strategy.name, "config": config}
    restored = strategies.strategy_from_config(entry)
    assert isinstance(restored, l2_pull.L2Pull) and restored.weight == 0.25
    # A weight is a constant of the traced step: each has its own.
    assert train_step_key(strategy) != train_step_key(l2_pull.L2Pull(0.5))
    assert train_step_key(strategy) == train_step_key(rebuilt)


def test_registry_builds_it_by_name():
    assert "l2-pull" in strategies.STRATEGY_NAMES
    default = strategies.get_strategy("l2-pull")
    assert isinstance(default, l2_pull.L2Pull)
    assert default.weight == l2_pull.DEFAULT_WEIGHT
    assert strategies.get_strategy("l2-pull", l2_weight=2.0).weight == 2.0
    # Another method leaves the setting unused, as it leaves `p`.
    assert isinstance(
        strategies.get_strategy("average", l2_weight=2.0), strategies.Average
    )
    check_strategy("l2-pull", rank=RANK, num_tasks=6, l2_weight=2.0)


def test_cli_flag_reaches_the_strategy():
    parser = cli.build_parser()
    args = ["run", "--methods", "average,l2-pull", "--l2-weight", "0.5"]
    settings = cli.resolve_settings(parser.parse_args(args))
    assert settings["l2_weight"] == 0.5
    experiment.check_settings(settings)
    assert experiment._make_strategy("l2-pull", settings, 6).weight == 0.5
    everything = cli.resolve_settings(
        parser.parse_args(["run", "--methods", "all"])
    )
    assert "l2-pull" in everything["methods"]
    assert everything["l2_weight"] == l2_pull.DEFAULT_WEIGHT
    experiment.check_settings(everything)
    # A run without the method records no weight: its settings, and a
    # study folder that compares them, are what they were.
    plain = cli.resolve_settings(parser.parse_args(["run"]))
    assert "l2_weight" not in plain
    assert experiment._make_strategy("l2-pull", plain, 6).weight == (
        l2_pull.DEFAULT_WEIGHT
    )


# Slow (a killed and a resumed run). In every run, every strategy rebuilds
# from its config (test_strategies.py) and a killed run resumes to the same
# matrix (test_resume_cli.py).
@pytest.mark.large
def test_a_run_folder_resumes_with_its_weight(
    tiny_preset, two_tasks, tmp_path, pulled_and_free
):
    (_, _, uninterrupted), _ = pulled_and_free
    first, second = two_tasks
    learner = new_learner(
        tiny_preset, l2_pull.L2Pull(WEIGHT), run_dir=str(tmp_path)
    )
    learner.learn_task(
        first.train, name=first.name, epochs=2, batch_size=8, verbose=0
    )
    resumed = ContinualLearner.resume(str(tmp_path))
    assert isinstance(resumed.strategy, l2_pull.L2Pull)
    assert resumed.strategy.weight == WEIGHT
    report = resumed.learn_task(
        second.train, name=second.name, epochs=2, batch_size=8, verbose=0
    )
    assert report.diagnostics["l2_distance_to_global"] > 0
    # It continues as the run that was never stopped.
    for path, value in resumed.global_state.numpy().items():
        np.testing.assert_allclose(
            value, uninterrupted[2][path], rtol=1e-4, atol=1e-5
        )


def test_regularisation_study_spans_two_decades_around_the_default():
    study = studies.get_study("regularisation")
    weights = [float(w) for w in studies.l2_weights()]
    default = l2_pull.DEFAULT_WEIGHT
    np.testing.assert_allclose(weights, [default / 10, default, default * 10])
    pulls = [f"l2w{w}/l2-pull" for w in studies.l2_weights()]
    assert study.labels() == ["merges/average", "merges/pam", *pulls]
    assert list(study.comparisons) == [
        *(("merges/pam", pull) for pull in pulls),
        *((pull, "merges/average") for pull in pulls),
    ]
    parser = cli.build_parser()
    for variant, flags in study.variants.items():
        settings = cli.resolve_settings(parser.parse_args(["run", *flags]))
        if variant != "merges":
            assert settings["l2_weight"] == float(flags[-1])
