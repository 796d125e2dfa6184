"""The merging baselines' fresh start: each task's adapter drawn anew
instead of cloned from the global one (the paper's App. B)."""

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import cli
from keras_pam import experiment
from keras_pam import merging
from keras_pam import strategies
from keras_pam.experiment import studies
from keras_pam.merging.lora import initial_adapter
from keras_pam.strategies.registry import check_strategy

RANK = 4


def _learner(preset, strategy, learning_rate=0.0):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        preset, rank=RANK, strategy=strategy, seed=3
    )
    learner.compile(optimizer=keras.optimizers.SGD(learning_rate))
    return learner


def _assert_states_equal(a, b):
    assert set(a) == set(b)
    for path in a:
        np.testing.assert_allclose(
            np.asarray(a[path]), np.asarray(b[path]), atol=1e-6
        )


def test_a_draw_is_another_adapter_of_the_same_distribution(tiny_preset):
    learner = _learner(tiny_preset, "average")
    model = learner.causal_lm
    first, again = initial_adapter(model, 3), initial_adapter(model, 3)
    _assert_states_equal(first, again)
    _assert_states_equal(first, learner.initial_state)
    task_2 = initial_adapter(model, 3, draw=2)
    for path in first:
        if path.endswith("lora_kernel_b"):
            assert not np.any(task_2[path])
        else:
            assert not np.allclose(first[path], task_2[path])
            limit = np.abs(np.asarray(first[path])).max()
            assert np.abs(np.asarray(task_2[path])).max() <= limit * 1.05
    task_1 = initial_adapter(model, 3, draw=1)
    a_paths = [p for p in first if p.endswith("lora_kernel_a")]
    assert a_paths
    for path in a_paths:
        assert not np.allclose(task_1[path], task_2[path])


@pytest.mark.parametrize("name", ["average", "ties", "tall"])
def test_fresh_start_trains_from_the_tasks_own_draw(
    tiny_preset, two_tasks, name
):
    # With a learning rate of 0 the trained adapter is its start: the
    # merge after task 1 is the merge of G_0 and task 1's draw.
    strategy = strategies.get_strategy(name, start="fresh")
    learner = _learner(tiny_preset, strategy)
    start = initial_adapter(learner.causal_lm, 3, draw=1)
    initial = learner.initial_state
    task = two_tasks[0]
    learner.learn_task(task.train, name=task.name, epochs=1, verbose=0)
    if name == "average":
        expected = merging.average([initial, start])
        _assert_states_equal(learner.global_state, expected)
    else:
        # TIES and TALL keep parts of each: every merged entry lies between
        # G_0's, the draw's and 0 (TIES's trim).
        for path, merged in learner.global_state.items():
            low = np.minimum(np.minimum(initial[path], start[path]), 0) - 1e-6
            high = np.maximum(np.maximum(initial[path], start[path]), 0) + 1e-6
            merged = np.asarray(merged)
            assert np.all((merged >= low) & (merged <= high))
        assert any(
            not np.allclose(np.asarray(merged), initial[path])
            for path, merged in learner.global_state.items()
        )


def test_clone_start_is_the_default_and_the_papers(tiny_preset, two_tasks):
    learner = _learner(tiny_preset, "average")
    assert learner.strategy.start == "clone"
    task = two_tasks[0]
    learner.learn_task(task.train, name=task.name, epochs=1, verbose=0)
    # Learning rate 0: the clone of G_0, averaged with G_0, is G_0.
    _assert_states_equal(learner.global_state, learner.initial_state)


def test_bad_start_is_refused():
    with pytest.raises(ValueError, match="`start` must be one of"):
        strategies.Average(start="random")
    with pytest.raises(ValueError, match="`start` must be one of"):
        strategies.get_strategy("ties", start="")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--start", "random"])


def test_config_names_start_only_when_fresh():
    assert "start" not in strategies.Average().get_config()
    for strategy in (
        strategies.Average(start="fresh"),
        strategies.TIES(start="fresh"),
    ):
        config = strategy.get_config()
        assert config["start"] == "fresh"
        entry = {"name": strategy.name, "config": config}
        restored = strategies.strategy_from_config(entry)
        assert type(restored) is type(strategy)
        assert restored.start == "fresh"


def test_registry_gives_start_to_the_merges_only():
    assert strategies.get_strategy("average", start="fresh").start == "fresh"
    assert strategies.get_strategy("ties", start="fresh").start == "fresh"
    assert strategies.get_strategy("tall", start="fresh").inner.start == (
        "fresh"
    )
    # The methods that align keep the clone, and the others take no start.
    assert strategies.get_strategy("pam", start="fresh").start == "clone"
    assert strategies.get_strategy("post-align", start="fresh").start == (
        "clone"
    )
    assert not hasattr(
        strategies.get_strategy("finetune", start="fresh"), "start"
    )
    check_strategy("tall", rank=RANK, num_tasks=6, start="fresh")


def test_cli_flag_reaches_the_strategy_and_is_recorded_only_when_given():
    parser = cli.build_parser()
    args = ["run", "--methods", "average,ties,tall,pam", "--start", "fresh"]
    settings = cli.resolve_settings(parser.parse_args(args))
    assert settings["start"] == "fresh"
    experiment.check_settings(settings)
    assert experiment._make_strategy("ties", settings, 6).start == "fresh"
    assert experiment._make_strategy("pam", settings, 6).start == "clone"
    plain = cli.resolve_settings(parser.parse_args(["run"]))
    assert "start" not in plain
    assert experiment._make_strategy("average", plain, 6).start == "clone"


def test_init_study_compares_clone_with_fresh_for_each_merge():
    study = studies.get_study("init")
    assert list(study.variants) == ["clone", "fresh"]
    for variant in study.variants:
        assert study.variant_methods(variant) == ["average", "ties", "tall"]
    assert "--start" in study.variants["fresh"]
    assert "--start" not in study.variants["clone"]
    assert study.comparisons == tuple(
        (f"clone/{m}", f"fresh/{m}") for m in ("average", "ties", "tall")
    )
