import json

import keras
import keras_hub
import numpy as np
import pytest

import keras_pam
from keras_pam import ContinualLearner
from keras_pam import strategies
from keras_pam.lora import AdapterState
from keras_pam.strategies import experience_replay
from keras_pam.strategies import lwf
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
        name, every=2, num_tasks=2, num_experts=2
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


def test_multitask_trains_on_the_union(tiny_preset, two_tasks):
    strategy = strategies.Multitask()
    run_two_tasks(tiny_preset, two_tasks, strategy)
    context = strategies.TaskContext("third", 3, two_tasks[0].train)
    union = strategy.training_data(context)
    assert len(union["prompts"]) == 3 * len(two_tasks[0].train["prompts"])


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


def test_distillation_loss():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(2, 3, 5)).astype("float32")
    student = rng.normal(size=(2, 3, 5)).astype("float32")
    mask = np.array([[1, 1, 0], [0, 1, 0]], "float32")
    loss = keras.ops.convert_to_numpy(
        lwf.distillation_loss(teacher, teacher, mask, 2.0)
    )
    assert abs(float(loss)) < 1e-6
    got = float(
        keras.ops.convert_to_numpy(
            lwf.distillation_loss(teacher, student, mask, 2.0)
        )
    )

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(teacher / 2), log_softmax(student / 2)
    kl = (np.exp(lt) * (lt - ls)).sum(-1)
    expected = 4 * (kl * mask).sum() / mask.sum()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_lwf_computes_teacher_logits_from_task_two(tiny_preset, two_tasks):
    strategy = strategies.LwF(strategies.Finetune())
    learner = run_two_tasks(tiny_preset, two_tasks, strategy)
    examples = two_tasks[0].train
    first = strategies.TaskContext("a", 1, examples)
    second = strategies.TaskContext("b", 2, examples)
    assert strategy.extra_inputs(examples, first) == {}
    logits = strategy.extra_inputs(examples, second)["teacher_logits"]
    vocabulary = learner.causal_lm.backbone.vocabulary_size
    assert logits.shape[0] == 32 and logits.shape[-1] == vocabulary


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


def test_tall_evaluates_learned_tasks_with_their_masks(tiny_preset, two_tasks):
    strategy = strategies.TALL(strategies.Average(), lam=0.1)
    learner = run_two_tasks(tiny_preset, two_tasks, strategy)
    initial, merged = learner.initial_state, learner.global_state
    name = two_tasks[0].name
    state = strategy.evaluation_state(name)
    tau = strategy.task_vectors[name]
    for key in initial:
        multitask = merged[key] - initial[key]
        mask = np.abs(tau[key]) >= 0.1 * np.abs(multitask - tau[key])
        np.testing.assert_allclose(
            state[key], initial[key] + mask * multitask, atol=1e-6
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


def test_orthogonality_loss():
    a = np.array([[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 0.0, -1.0]], "float32")
    old = np.array([1, 1, 0, 0], "float32")
    new = np.array([0, 0, 1, 1], "float32")
    # A_old^T A_new = [[2, 1], [0, -1]] -> sum of |.| = 4.
    got = olora.orthogonality_loss([a], old, new)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), 4.0)


def test_olora_trains_one_slice_per_task(tiny_preset, two_tasks):
    snapshots = []
    learner = run_two_tasks(
        tiny_preset,
        two_tasks,
        strategies.OLoRA(num_tasks=2),
        rank=4,
        snapshots=snapshots,
    )
    after_first = snapshots[1][0]
    final = learner.global_state

    def rank_slice(path, value, columns):
        return (
            value[columns] if path.endswith("kernel_b") else value[..., columns]
        )

    for key in final:
        # Task 2 left task 1's slice exactly as it was.
        np.testing.assert_array_equal(
            rank_slice(key, final[key], slice(0, 2)),
            rank_slice(key, after_first[key], slice(0, 2)),
        )
        # After task 1 only the first slice was in use.
        assert not np.any(rank_slice(key, after_first[key], slice(2, 4)))
    assert any(
        np.any(v[2:]) for k, v in final.items() if k.endswith("kernel_b")
    )
    with pytest.raises(ValueError, match="multiple of `num_tasks`"):
        ContinualLearner.from_preset(
            tiny_preset, rank=4, strategy=strategies.OLoRA(num_tasks=3)
        )


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
    assert not np.isnan(report.misaligned_fraction)
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
