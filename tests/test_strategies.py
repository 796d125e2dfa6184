import json
import types

import keras
import keras_hub
import numpy as np
import pytest

import keras_pam
from keras_pam import ContinualLearner
from keras_pam import strategies
from keras_pam.lora import AdapterState
from keras_pam.strategies import experience_replay
from keras_pam.strategies import olora
from keras_pam.strategies import strategy as strategy_module

EXPECTED_METRICS = {
    "zero-shot": {"acc"},
    "independent": {"acc", "a_t"},
    "multitask": {"acc"},
    "finetune": {"acc", "bwt", "fwt", "a_t"},
    "magmax": {"acc", "bwt", "fwt", "a_t"},
    "lwf": {"acc", "bwt", "fwt", "a_t"},
    "er": {"acc", "bwt", "fwt", "a_t"},
    "olora": {"acc", "bwt", "fwt", "a_t"},
    "moelora": {"acc", "bwt", "fwt", "a_t"},
}
ALL_METRICS = {"acc", "bwt", "fwt", "a_t", "a_m"}


class SnapshotTemporary(keras.callbacks.Callback):
    """Keeps the temporary adapter as `fit` leaves it."""

    def on_train_end(self, logs=None):
        self.state = AdapterState.from_model(self.model)


def run_two_tasks(tiny_preset, two_tasks, strategy, rank=4, snapshots=None):
    """Learn the two tasks; `snapshots` collects (global before, temporary)."""
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=rank, strategy=strategy
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    for task in two_tasks:
        snapshot = SnapshotTemporary()
        before = learner.global_state
        learner.learn_task(
            task.train,
            name=task.name,
            epochs=1,
            batch_size=8,
            verbose=0,
            callbacks=[snapshot],
        )
        if snapshots is not None:
            snapshots.append((before, getattr(snapshot, "state", None)))
    return learner


@pytest.mark.parametrize("name", strategies.STRATEGY_NAMES)
def test_every_strategy_learns_two_tasks(tiny_preset, two_tasks, name):
    strategy = strategies.get_strategy(
        name, align_every=2, num_tasks=2, num_experts=2
    )
    learner = run_two_tasks(tiny_preset, two_tasks, strategy)
    report = learner.evaluate_all()
    assert report.matrix.shape == (2, 2)
    assert np.all(np.isfinite(report.matrix))
    assert np.all((report.matrix >= 0) & (report.matrix <= 1))
    assert set(report.metrics) == EXPECTED_METRICS.get(name, ALL_METRICS)
    assert all(np.isfinite(v) for v in report.metrics.values())
    trained = any(
        np.any(v) for k, v in learner.global_state.items() if "kernel_b" in k
    )
    if name == "olora":
        # O-LoRA keeps each task's LoRA in frozen weights of its own; the
        # learner's adapter adds nothing on top of them.
        assert not trained
        past = learner.strategy.get_state()["past"]
        trained = any(
            np.any(v) for k, v in past.items() if k.endswith(olora.PAST_B_NAME)
        )
    # Only the baselines that keep the base model leave B at zero.
    assert trained == (name not in ("zero-shot", "independent"))


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="Unknown strategy 'pam2'"):
        strategies.get_strategy("pam2")
    with pytest.raises(ValueError, match="num_tasks"):
        strategies.get_strategy("olora")


def test_zero_shot_keeps_the_base(tiny_preset, two_tasks):
    learner = run_two_tasks(tiny_preset, two_tasks, "zero-shot")
    report = learner.evaluate_all()
    np.testing.assert_array_equal(report.matrix[0], report.zero_shot)
    np.testing.assert_array_equal(report.matrix[1], report.zero_shot)


def test_independent_evaluates_each_task_with_its_own_adapter(
    tiny_preset, two_tasks
):
    learner = run_two_tasks(tiny_preset, two_tasks, "independent")
    strategy = learner.strategy
    first, second = (strategy.task_adapters[t.name] for t in two_tasks)
    # Each task adapter started from the initial one: B was zero.
    assert any(np.any(first[k] != second[k]) for k in first)
    report = learner.evaluate_all()
    # The diagonal does not change after later tasks: nothing is shared.
    assert report.matrix[1, 0] == report.matrix[0, 0]


def test_reservoir_is_bounded_and_uniform():
    rng = np.random.default_rng(0)
    hits = np.zeros(100)
    for _ in range(2000):
        buffer = []
        for slot, item in experience_replay.reservoir_update(
            0, 0, 100, 10, rng
        ):
            if slot == len(buffer):
                buffer.append(item)
            else:
                buffer[slot] = item
        assert len(buffer) == 10
        hits[buffer] += 1
    # Every item is kept with probability 10/100.
    np.testing.assert_allclose(hits / 2000, 0.1, atol=0.03)


def test_experience_replay_mixes_the_buffer(tiny_preset, two_tasks):
    strategy = strategies.ExperienceReplay(strategies.Finetune(), 20)
    run_two_tasks(tiny_preset, two_tasks, strategy)
    assert len(strategy.buffer["prompts"]) == 20
    assert strategy.num_seen == 64
    context = strategies.TaskContext("third", 3, two_tasks[0].train)
    assert len(strategy.training_data(context)["prompts"]) == 32 + 20
    with pytest.raises(ValueError, match="buffer_size"):
        strategies.ExperienceReplay(strategies.Finetune(), 0)


def test_ilora_global_is_the_ema_of_the_fast_adapter(tiny_preset, two_tasks):
    strategy = strategies.ILoRA(decay=0.5)
    learner = run_two_tasks(tiny_preset, two_tasks, strategy)
    fast, slow = strategy.fast, learner.global_state
    different = [k for k in fast if "kernel_b" in k and np.any(fast[k])]
    assert different
    assert any(not np.allclose(fast[k], slow[k]) for k in different)


def test_magmax_takes_the_largest_task_vector(tiny_preset, two_tasks):
    strategy = strategies.MagMax(scale=1.0)
    learner = run_two_tasks(tiny_preset, two_tasks, strategy)
    initial = learner.initial_state
    first, second = strategy.task_states
    for key in initial:
        tau_1, tau_2 = first[key] - initial[key], second[key] - initial[key]
        selected = np.where(np.abs(tau_2) >= np.abs(tau_1), tau_2, tau_1)
        np.testing.assert_allclose(
            strategy.merged[key], initial[key] + selected, atol=1e-6
        )


def test_tall_task_id_evaluates_learned_tasks_with_their_masks(
    tiny_preset, two_tasks
):
    strategy = strategies.get_strategy("tall-task-id")
    assert isinstance(strategy, strategies.TALLTaskID)
    assert isinstance(strategy.inner, strategies.Average)
    snapshots = []
    learner = run_two_tasks(
        tiny_preset, two_tasks, strategy, snapshots=snapshots
    )
    initial, merged = learner.initial_state, learner.global_state
    (g0, _), (g1, _) = snapshots
    first, second = (task.name for task in two_tasks)
    # A task's vector is what its merge added to the global adapter, so
    # the task vectors sum to `tau_MTL = G - G_0` on one scale.
    for key in initial:
        np.testing.assert_allclose(
            strategy.task_vectors[first][key], g1[key] - g0[key], atol=1e-6
        )
        np.testing.assert_allclose(
            strategy.task_vectors[second][key],
            merged[key] - g1[key],
            atol=1e-6,
        )
    states = {}
    for name in (first, second):
        states[name] = strategy.evaluation_state(name)
        tau = strategy.task_vectors[name]
        for key in initial:
            multitask = merged[key] - initial[key]
            mask = np.abs(tau[key]) >= 0.1 * np.abs(multitask - tau[key])
            np.testing.assert_allclose(
                states[name][key], initial[key] + mask * multitask, atol=1e-6
            )
    # Each task is evaluated with its own mask, looked up by its name.
    assert any(
        not np.array_equal(states[first][key], states[second][key])
        for key in initial
    )
    assert strategy.evaluation_state("not learned") is None


def test_post_align_merges_the_aligned_adapter(tiny_preset, two_tasks):
    snapshots = []
    strategy = strategies.PostAlign(p=1.0, reinit="zero")
    learner = run_two_tasks(
        tiny_preset, two_tasks, strategy, snapshots=snapshots
    )
    (_, _), (previous, temporary) = snapshots
    # With p = 1 every non-zero global entry is important: entries of
    # strictly opposite sign are zeroed before the average.
    flipped = 0
    for key, merged in learner.global_state.items():
        conflict = previous[key] * temporary[key] < 0
        flipped += int(conflict.sum())
        aligned = np.where(conflict, 0.0, temporary[key])
        np.testing.assert_allclose(
            merged, (previous[key] + aligned) / 2, atol=1e-6
        )
    assert flipped > 0


class ClipAndCount(keras_pam.InStepUpdate):
    """Clips every LoRA factor after each optimizer step and counts the
    steps: work that only the train step can do."""

    def __init__(self, bound, **kwargs):
        super().__init__(**kwargs)
        self.bound = bound
        self.steps = keras.Variable(
            0, dtype="int32", trainable=False, name="clip_steps"
        )

    def update(self, variables, optimizer):
        for variable in variables.values():
            variable.assign(
                keras.ops.clip(variable.value, -self.bound, self.bound)
            )
        self.steps.assign(self.steps.value + 1)

    def reset(self):
        self.steps.assign(0)


class ClippedFinetune(strategies.Finetune):
    """A method that works inside the train step, written in one place:
    the learner is not changed for it."""

    name = "clipped-finetune"

    def build_in_step_update(self):
        return ClipAndCount(bound=0.01)

    def task_diagnostics(self, temporary, task):
        steps = self.learner.in_step_update.steps.value
        return {
            **super().task_diagnostics(temporary, task),
            "steps": int(keras.ops.convert_to_numpy(steps)),
        }


def test_a_strategy_can_work_inside_the_train_step(tiny_preset, two_tasks):
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, strategy=ClippedFinetune()
    )
    task = two_tasks[0]
    report = learner.learn_task(
        task.train, name=task.name, epochs=2, batch_size=8, verbose=0
    )
    num_examples = len(task.train["prompts"])
    assert report.diagnostics["steps"] == 2 * -(-num_examples // 8)
    assert 0.0 <= report.misaligned_fraction_all <= 1.0
    assert 0.0 <= report.misaligned_fraction_important <= 1.0
    assert "of all entries" in report.summary()
    largest = max(
        float(np.max(np.abs(learner.global_state[path])))
        for path in learner.global_state
    )
    assert largest <= 0.01 + 1e-7
    # A plain strategy after it runs a plain step (nothing clipped).
    learner.reset(strategy="finetune", seed=0)
    assert learner.in_step_update is None
    learner.compile(optimizer=keras.optimizers.Adam(1e-1))
    learner.learn_task(task.train, name=task.name, batch_size=8, verbose=0)
    largest = max(
        float(np.max(np.abs(learner.global_state[path])))
        for path in learner.global_state
    )
    assert largest > 0.01


def test_the_wrapper_forwards_every_hook():
    own = {"attach", "chain", "get_state", "set_state", "get_config"}
    hooks = {
        name
        for name, value in vars(strategies.Strategy).items()
        if callable(value) and not name.startswith("_")
    }
    assert hooks - own == set(strategy_module.FORWARDED_HOOKS)
    inner = strategies.PAM(p=0.3)
    wrapper = strategies.StrategyWrapper(inner)
    for name in strategy_module.FORWARDED_ATTRIBUTES:
        assert getattr(wrapper, name) == getattr(inner, name)
    assert wrapper.get_config() == {
        "inner": {"name": "pam", "config": inner.get_config()}
    }


@pytest.mark.parametrize("name", strategies.STRATEGY_NAMES)
def test_every_named_strategy_rebuilds_from_its_config(name):
    strategy = strategies.get_strategy(name, num_tasks=2, p=0.3)
    assert strategy.name == name
    entry = {"name": strategy.name, "config": strategy.get_config()}
    rebuilt = strategies.strategy_from_config(json.loads(json.dumps(entry)))
    assert type(rebuilt) is type(strategy)
    assert rebuilt.name == name
    assert rebuilt.get_config() == strategy.get_config()


def test_composed_names_nest_wrappers_around_a_method():
    strategy = strategies.get_strategy("er+tall+pam", p=0.3)
    assert strategy.name == "er+tall+pam"
    assert isinstance(strategy, strategies.ExperienceReplay)
    assert isinstance(strategy.inner, strategies.TALL)
    assert strategy.inner.inner.config.p == 0.3
    assert strategy.chain() == [strategy, strategy.inner, strategy.inner.inner]
    # A wrapper alone wraps its default method.
    assert isinstance(strategies.get_strategy("lwf").inner, strategies.Finetune)
    for name in ("er+", "pam+er", "pam2"):
        with pytest.raises(ValueError, match="Unknown strategy"):
            strategies.get_strategy(name)


def test_a_custom_strategy_keeps_its_settings_through_its_config():
    strategy = strategies.ExperienceReplay(
        strategies.PAM(p=0.7, merge="ties"), buffer_size=17, seed=3
    )
    entry = {"name": strategy.name, "config": strategy.get_config()}
    rebuilt = strategies.strategy_from_config(entry)
    assert rebuilt.buffer_size == 17
    assert rebuilt.inner.config.p == 0.7
    assert rebuilt.get_config() == strategy.get_config()


def test_a_named_strategy_with_merge_or_align_is_refused(tiny_preset):
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(tiny_preset)
    for kwargs in ({"merge": "ties"}, {"align": False}, {"merge": None}):
        with pytest.raises(ValueError, match="cannot be combined"):
            ContinualLearner(causal_lm, rank=4, strategy="pam", **kwargs)


def test_alignment_settings_have_one_default():
    config = keras_pam.AlignmentConfig()
    assert strategies.PAM().config == config
    assert strategies.get_strategy("er+pam").inner.config == config
    assert strategies.get_strategy("pam", p=0.3).config == config.replace(p=0.3)
    with pytest.raises(ValueError, match="Unknown alignment settings"):
        strategies.get_strategy("pam", q=0.3)


def numpy_misaligned_fractions(temporary, global_state, p, scope):
    """Both misaligned fractions in numpy: opposite signs over all
    entries, and over the non-zero top `ceil(p * n)` global magnitudes
    (per tensor or over all, ties kept)."""
    temps = [np.asarray(temporary[k], "float64") for k in global_state]
    globals_ = [np.asarray(global_state[k], "float64") for k in global_state]
    opposed = [np.sign(t) * np.sign(g) < 0 for t, g in zip(temps, globals_)]
    groups = [np.abs(g) for g in globals_]
    if scope == "global":
        groups = [np.concatenate([m.ravel() for m in groups])] * len(groups)
    taus = [
        np.sort(m, axis=None)[::-1][int(np.ceil(round(p * m.size, 6))) - 1]
        for m in groups
    ]
    important = [(np.abs(g) >= t) & (g != 0) for g, t in zip(globals_, taus)]
    return (
        sum(o.sum() for o in opposed) / sum(t.size for t in temps),
        sum((o & m).sum() for o, m in zip(opposed, important))
        / sum(m.sum() for m in important),
    )


def own_p_and_scope(strategy):
    """The `p` and `scope` of the strategy in the chain that aligns, or
    the default `AlignmentConfig`'s."""
    for link in strategy.chain():
        if isinstance(link, strategies.PAM):
            return link.config.p, link.config.scope
        if isinstance(link, strategies.PostAlign):
            return link.p, link.scope
    default = keras_pam.AlignmentConfig()
    return default.p, default.scope


@pytest.mark.parametrize("scope", ["tensor", "global"])
@pytest.mark.parametrize("name", strategies.STRATEGY_NAMES)
def test_task_diagnostics_report_both_misaligned_fractions(name, scope):
    rng = np.random.default_rng(0)
    previous = AdapterState(
        {
            "a": rng.normal(size=(6, 4)).astype("float32"),
            "b": rng.normal(size=(4, 5)).astype("float32"),
            "c": np.zeros((3, 3), "float32"),
        }
    )
    temporary = previous.map(
        lambda t: rng.normal(size=t.shape).astype("float32")
    )
    strategy = strategies.get_strategy(
        name, p=0.3, scope=scope, num_tasks=2, num_experts=2
    )
    task = strategy_module.TaskContext(
        name="t", index=2, examples={}, previous_global=previous
    )
    diagnostics = strategy.task_diagnostics(temporary, task)
    p, own_scope = own_p_and_scope(strategy)
    expected = numpy_misaligned_fractions(temporary, previous, p, own_scope)
    assert diagnostics["misaligned_fraction_all"] == pytest.approx(expected[0])
    assert diagnostics["misaligned_fraction_important"] == pytest.approx(
        expected[1]
    )
    assert "misaligned_fraction" not in diagnostics
    if name.endswith("pam") or name == "post-align":
        # The strategy's own p and scope, not the default: here they give
        # another fraction.
        assert (p, own_scope) == (0.3, scope)
        default = numpy_misaligned_fractions(temporary, previous, 0.5, scope)
        assert expected[1] != pytest.approx(default[1])


def test_pam_measures_the_important_entries_at_its_own_p():
    rng = np.random.default_rng(1)
    previous = AdapterState({"w": rng.normal(size=(8, 8)).astype("float32")})
    temporary = previous.map(
        lambda t: rng.normal(size=t.shape).astype("float32")
    )
    task = strategy_module.TaskContext(
        name="t", index=2, examples={}, previous_global=previous
    )
    diagnostics = strategies.PAM(p=0.3).task_diagnostics(temporary, task)
    expected = numpy_misaligned_fractions(temporary, previous, 0.3, "tensor")
    default = numpy_misaligned_fractions(temporary, previous, 0.5, "tensor")
    assert expected[1] != pytest.approx(default[1])
    assert diagnostics["misaligned_fraction_important"] == (
        pytest.approx(expected[1])
    )
    # Over all entries, p plays no part.
    assert diagnostics["misaligned_fraction_all"] == (
        pytest.approx(expected[0])
    )
    assert expected[0] == pytest.approx(default[0])


class CountTraining(keras.callbacks.Callback):
    """Counts the `fit` calls and the batches it trains on."""

    def __init__(self):
        super().__init__()
        self.fits = 0
        self.batches = 0

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


class RecordingMultitask(strategies.Multitask):
    """Keeps every training set that `learn_task` asks it for."""

    def attach(self, learner):
        super().attach(learner)
        self.unions = []

    def training_data(self, task):
        union = super().training_data(task)
        self.unions.append(union)
        return union


def test_multitask_trains_once_on_the_union_of_all_tasks(
    tiny_preset, two_tasks
):
    third = keras_pam.datasets.make_task(
        "count", num_train=16, num_test=16, image_size=32, seed=2, patch_size=8
    )
    tasks = [*two_tasks, third]
    strategy = RecordingMultitask(num_tasks=3)
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, strategy=strategy
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in tasks:
        learner.add_eval_task(task.name, task.test)
    counters, snapshot = [], SnapshotTemporary()
    for task in tasks:
        counters.append(CountTraining())
        learner.learn_task(
            task.train,
            name=task.name,
            epochs=1,
            batch_size=8,
            verbose=0,
            callbacks=[counters[-1], snapshot],
        )
    # One training, at the last task, on all 32 + 32 + 16 examples.
    assert [c.fits for c in counters] == [0, 0, 1]
    assert counters[-1].batches == (32 + 32 + 16) // 8
    (union,) = strategy.unions
    for key in ("prompts", "responses"):
        expected = np.concatenate([t.train[key] for t in tasks])
        assert sorted(union[key]) == sorted(expected)
    assert len(union["images"]) == 80
    # The joint LoRA started from the initial adapter and became global.
    initial = learner.initial_state
    assert all(not np.any(initial[k]) for k in initial if "kernel_b" in k)
    for key in learner.global_state:
        np.testing.assert_array_equal(
            learner.global_state[key], snapshot.state[key]
        )
    assert any(np.any(snapshot.state[k] != initial[k]) for k in initial)
    # Rows before the last task are the initial adapter's (zero-shot);
    # the last row is the jointly trained adapter's, and ACC its mean.
    report = learner.evaluate_all()
    np.testing.assert_array_equal(report.matrix[0], report.zero_shot)
    np.testing.assert_array_equal(report.matrix[1], report.zero_shot)
    names = learner.eval_task_names
    joint = learner.eval_tasks.score_all(names, snapshot.state)
    np.testing.assert_allclose(report.matrix[-1], [joint[n] for n in names])
    assert set(report.metrics) == {"acc"}
    assert report.metrics["acc"] == pytest.approx(np.mean(report.matrix[-1]))
    # The sequence is over: a fourth task is refused.
    with pytest.raises(ValueError, match="num_tasks`=3"):
        learner.learn_task(two_tasks[0].train, name="more", verbose=0)


def test_multitask_needs_the_number_of_tasks():
    with pytest.raises(ValueError, match="num_tasks"):
        strategies.Multitask()
    with pytest.raises(ValueError, match="num_tasks"):
        strategies.get_strategy("multitask")
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_tasks"):
            strategies.Multitask(num_tasks=bad)
    strategies.registry.check_strategy("multitask", num_tasks=4)
    with pytest.raises(ValueError, match="the sequence has 3 tasks"):
        strategies.Multitask(num_tasks=4).check_settings(num_tasks=3)


def test_multitask_keeps_num_tasks_through_its_config():
    strategy = strategies.get_strategy("multitask", num_tasks=5)
    assert strategy.num_tasks == 5
    entry = {"name": strategy.name, "config": strategy.get_config()}
    rebuilt = strategies.strategy_from_config(json.loads(json.dumps(entry)))
    assert isinstance(rebuilt, strategies.Multitask)
    assert rebuilt.num_tasks == 5
    # A task before the fifth only collects its data.
    assert rebuilt.trains is False
    rebuilt.seen = [{}] * 4
    assert rebuilt.trains is True


def _tall_expected(previous, temporary, initial, lam=0.1):
    """TALL's consensus merge of `[G_{t-1}, W']` in numpy, and the number
    of entries it drops."""
    expected, dropped = {}, 0
    for key in initial:
        g0 = np.asarray(initial[key], np.float64)
        g = np.asarray(previous[key], np.float64)
        w = np.asarray(temporary[key], np.float64)
        tau_g, tau_w = g - g0, w - g0
        keep = (np.abs(tau_g) >= lam * np.abs(tau_w)) & (
            np.abs(tau_w) >= lam * np.abs(tau_g)
        )
        expected[key] = np.where(keep, (g + w) / 2, g0)
        dropped += int(np.sum(~keep))
    return expected, dropped


def test_tall_merges_into_the_global_for_every_task(tiny_preset, two_tasks):
    strategy = strategies.get_strategy("tall")
    assert isinstance(strategy, strategies.TALL)
    snapshots = []
    learner = run_two_tasks(
        tiny_preset, two_tasks, strategy, snapshots=snapshots
    )
    initial = learner.initial_state
    (g0, w1), (g1, w2) = snapshots
    # Before the first task the global adapter holds no task: G_1 is the
    # plain mean.
    for key in initial:
        np.testing.assert_allclose(g1[key], (g0[key] + w1[key]) / 2, atol=1e-6)
    expected, dropped = _tall_expected(g1, w2, initial)
    for key in initial:
        np.testing.assert_allclose(
            learner.global_state[key], expected[key], atol=1e-6
        )
    assert 0 < dropped < initial.num_entries
    # The report counts the selfish entries the consensus reset to G_0.
    first, second = learner.task_reports
    assert first.diagnostics["tall_pruned_entries"] == 0
    assert second.diagnostics["tall_pruned_entries"] == dropped
    assert second.diagnostics["tall_pruned_fraction"] == pytest.approx(
        dropped / initial.num_entries
    )
    # Task identity is unknown at test time: every task, learned or not,
    # is evaluated with the global adapter.
    for name in (*(task.name for task in two_tasks), "not learned"):
        assert strategy.evaluation_state(name) is None


@pytest.mark.parametrize("name", ["tall", "tall+pam", "er+tall+pam"])
def test_tall_names_merge_without_the_task_identity(name):
    rng = np.random.default_rng(0)

    def random_state():
        return AdapterState(
            {
                "a": rng.normal(size=(6, 4)).astype("float32"),
                "b": rng.normal(size=(4, 5)).astype("float32"),
            }
        )

    initial, previous, temporary = (random_state() for _ in range(3))
    strategy = strategies.get_strategy(name, p=0.3)
    learner = types.SimpleNamespace(
        global_state=previous, initial_state=initial
    )
    for link in strategy.chain():
        link.learner = learner
    task = strategy_module.TaskContext(
        name="t2", index=2, examples={}, previous_global=previous
    )
    merged = strategy.merge(temporary, task)
    expected, dropped = _tall_expected(previous, temporary, initial)
    for key in initial:
        np.testing.assert_allclose(merged[key], expected[key], rtol=1e-6)
    assert dropped > 0
    for task_name in ("t1", "t2", "other"):
        assert strategy.evaluation_state(task_name) is None


def test_tall_and_tall_task_id_names_rebuild_from_their_configs():
    cases = {
        "tall": (strategies.TALL, strategies.Average),
        "tall+pam": (strategies.TALL, strategies.PAM),
        "tall-task-id": (strategies.TALLTaskID, strategies.Average),
        "tall-task-id+pam": (strategies.TALLTaskID, strategies.PAM),
    }
    for name, (wrapper, inner) in cases.items():
        strategy = strategies.get_strategy(name, p=0.3)
        assert strategy.name == name
        assert type(strategy) is wrapper and type(strategy.inner) is inner
        entry = {"name": strategy.name, "config": strategy.get_config()}
        rebuilt = strategies.strategy_from_config(json.loads(json.dumps(entry)))
        assert type(rebuilt) is wrapper and type(rebuilt.inner) is inner
        assert rebuilt.name == name
        assert rebuilt.get_config() == strategy.get_config()
    custom = strategies.TALLTaskID(strategies.PAM(p=0.3), lam=0.2)
    entry = {"name": custom.name, "config": custom.get_config()}
    rebuilt = strategies.strategy_from_config(json.loads(json.dumps(entry)))
    assert rebuilt.lam == 0.2 and rebuilt.inner.config.p == 0.3
    composed = strategies.get_strategy("er+tall-task-id+pam")
    assert isinstance(composed.inner, strategies.TALLTaskID)
    # The paper's comparison does not know the task at test time.
    assert "tall" in strategies.STRATEGY_NAMES
    assert "tall-task-id" not in strategies.STRATEGY_NAMES
