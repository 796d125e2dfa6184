"""A task's recipe: schedule, weight decay, label smoothing, accumulation."""

import math

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import TaskRecipe
from keras_pam import training
from keras_pam.datasets import hyperparameters
from keras_pam.datasets.registry import PAPER_LEARNING_RATE
from keras_pam.losses import label_smoothing_loss
from keras_pam.task_learning_rate import TaskLearningRate


def big_vision_cosine(update, total, warmup, peak):
    """big_vision's `create_learning_rate_schedule` (cosine, linear
    warmup), written out in numpy."""
    progress = np.clip((update - warmup) / max(total - warmup, 1), 0, 1)
    rate = peak * 0.5 * (1 + np.cos(np.pi * progress))
    if warmup:
        rate = rate * min(1.0, update / warmup)
    return rate


def test_the_recipe_checks_its_settings():
    with pytest.raises(ValueError, match="must divide"):
        TaskRecipe(batch_size=10, gradient_accumulation_steps=4)
    with pytest.raises(ValueError, match="schedule"):
        TaskRecipe(schedule="linear")
    with pytest.raises(ValueError, match="label_smoothing"):
        TaskRecipe(label_smoothing=1.0)
    with pytest.raises(ValueError, match="epochs"):
        TaskRecipe(epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        TaskRecipe(learning_rate=-1.0)
    recipe = TaskRecipe(epochs=3, batch_size=8, gradient_accumulation_steps=4)
    # 10 examples: 5 micro-batches of 2 per epoch, 15 in all, 3 updates.
    assert recipe.steps_per_epoch(10) == 5
    assert recipe.num_updates(10) == 3
    assert TaskRecipe.from_dict(recipe.to_dict()) == recipe


def test_the_paper_recipe_is_table_4_with_the_transfer_schedule():
    recipe = hyperparameters("RSVQA-lr").recipe(gradient_accumulation_steps=8)
    assert (recipe.epochs, recipe.batch_size) == (3, 256)
    assert recipe.micro_batch_size == 32
    assert recipe.label_smoothing == 0.2
    assert recipe.learning_rate == PAPER_LEARNING_RATE
    assert recipe.schedule == "cosine"
    assert hyperparameters("VQAv2").recipe().weight_decay == 1e-6
    assert hyperparameters("GQA").recipe(epochs=2).epochs == 2


def test_the_joint_recipe_weighs_each_task_by_its_examples():
    # Table 4: ScienceQA 20 epochs of 128; VQAv2 10 of 256, decay 1e-6;
    # RSVQA-lr 3 of 256, smoothing 0.2.
    recipes = [
        hyperparameters(name).recipe(gradient_accumulation_steps=2)
        for name in ("ScienceQA", "VQAv2", "RSVQA-lr")
    ]
    joint = TaskRecipe.joint(recipes, [60, 30, 10])
    # 0.6 x 20 + 0.3 x 10 + 0.1 x 3 = 15.3 epochs: the union's 100
    # examples 15 times, about the 1530 the three trainings visit.
    assert joint.epochs == 15
    # 0.6 x 128 + 0.4 x 256 = 179.2, to the nearest multiple of 128.
    assert joint.batch_size == 128 and joint.micro_batch_size == 64
    assert joint.weight_decay == pytest.approx(0.3e-6, rel=1e-12)
    assert joint.label_smoothing == pytest.approx(0.02, rel=1e-12)
    # Shared settings are kept as they are.
    assert joint.learning_rate == PAPER_LEARNING_RATE
    assert joint.schedule == "cosine" and joint.warmup_fraction == 0.05
    assert joint.gradient_accumulation_steps == 2
    # The plain mean would give 11 epochs of 256 and smoothing 0.067, and
    # the last task's own recipe 3 epochs: sizes the other way round move
    # every setting towards the larger tasks.
    joint = TaskRecipe.joint(recipes, [10, 30, 60])
    # 2 + 3 + 1.8 = 6.8 epochs; 12.8 + 230.4 = 243.2 examples a batch.
    assert (joint.epochs, joint.batch_size) == (7, 256)
    assert joint.weight_decay == pytest.approx(0.3e-6, rel=1e-12)
    assert joint.label_smoothing == pytest.approx(0.12, rel=1e-12)
    # Halves round up (Python's `round` would give 2).
    halves = [TaskRecipe(epochs=1, batch_size=8), TaskRecipe(epochs=4)]
    assert TaskRecipe.joint(halves, [1, 1]).epochs == 3
    # Alike recipes (the testbed's) give that recipe, whatever the sizes.
    assert TaskRecipe.joint(recipes[1:2] * 2, [5, 7]) == recipes[1]
    science = recipes[0]
    for other, name in (
        (science.replace(gradient_accumulation_steps=4), "accumulation"),
        (science.replace(schedule="constant"), "schedule"),
        (science.replace(weight_decay=None), "weight_decay"),
        (science.replace(learning_rate=None), "learning_rate"),
    ):
        with pytest.raises(ValueError, match=name):
            TaskRecipe.joint([science, other], [1, 1])
    with pytest.raises(ValueError, match="num_examples"):
        TaskRecipe.joint([science], [0])
    with pytest.raises(ValueError, match="num_examples"):
        TaskRecipe.joint(recipes, [1, 1])
    with pytest.raises(ValueError, match="recipes"):
        TaskRecipe.joint([], [])


def test_the_schedule_is_big_vision_s_counting_updates():
    optimizer = keras.optimizers.Adam(1e-3)
    schedule = TaskLearningRate.attach(optimizer)
    assert optimizer.learning_rate is not None
    # Before `set`: the optimizer's own rate, constant.
    assert float(schedule(123)) == pytest.approx(1e-3)
    schedule.set(
        5e-4, num_updates=40, warmup_updates=4, cosine=True, accumulation=3
    )
    for micro_batch in range(0, 130, 7):
        update = micro_batch // 3
        assert float(schedule(micro_batch)) == pytest.approx(
            big_vision_cosine(update, 40, 4, 5e-4), rel=1e-5, abs=1e-12
        )
    schedule.set(2e-4)
    assert float(schedule(55)) == pytest.approx(2e-4)
    restored = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer)
    )
    assert isinstance(restored._learning_rate, TaskLearningRate)
    with pytest.raises(ValueError, match="schedule of its own"):
        TaskLearningRate.attach(
            keras.optimizers.Adam(
                keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)
            )
        )


def test_label_smoothing_adds_the_smoothed_targets_term():
    """Task loss + the term is the cross-entropy against
    `(1 - e) one_hot + e / V`, normalised by batch x length."""
    rng = np.random.default_rng(0)
    batch, length, vocab, smoothing = 2, 5, 7, 0.2
    logits = rng.normal(size=(batch, length, vocab)).astype("float32")
    labels = rng.integers(0, vocab, size=(batch, length))
    weights = (rng.random((batch, length)) > 0.4).astype("float32")
    task_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        labels, logits, sample_weight=weights
    )
    got = float(task_loss) + float(
        label_smoothing_loss(labels, logits, weights, smoothing)
    )
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = (1 - smoothing) * np.eye(vocab)[labels] + smoothing / vocab
    per_token = -(targets * log_p).sum(-1)
    expected = (per_token * weights).sum() / (batch * length)
    assert got == pytest.approx(expected, rel=1e-5)


def sgd_learner(tiny_preset, learning_rate=0.05):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, strategy="finetune", seed=0
    )
    learner.compile(optimizer=keras.optimizers.SGD(learning_rate))
    return learner


def trained(learner, task, recipe):
    learner.learn_task(
        task.train, name=task.name, recipe=recipe, shuffle=False, verbose=0
    )
    return learner.global_state.numpy()


def test_accumulated_micro_batches_make_the_full_batch_update(
    tiny_preset, two_tasks
):
    """Two micro-batches of 8 give the update of one batch of 16, and the
    schedule counts updates, not micro-batches."""
    task = two_tasks[0]
    full = TaskRecipe(
        epochs=2, batch_size=16, schedule="cosine", warmup_fraction=0.25
    )
    learner = sgd_learner(tiny_preset)
    expected = trained(learner, task, full)
    split = trained(
        learner.reset(strategy="finetune", seed=0),
        task,
        full.replace(gradient_accumulation_steps=2),
    )
    for key, value in expected.items():
        np.testing.assert_allclose(split[key], value, rtol=1e-4, atol=1e-6)
    moved = [np.abs(split[k] - learner.initial_state[k]).max() for k in split]
    assert max(moved) > 0


class OptimizerSteps(keras.callbacks.Callback):
    """The optimizer's update count (`iterations`) and its train-step count
    at the end of each epoch."""

    def on_train_begin(self, logs=None):
        self.updates, self.steps = [], []

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        self.updates.append(
            int(keras.ops.convert_to_numpy(optimizer.iterations))
        )
        self.steps.append(
            int(keras.ops.convert_to_numpy(optimizer._iterations))
        )


def test_accumulated_adam_counts_updates_not_micro_batches(
    tiny_preset, two_tasks
):
    """Adam's moments and bias correction advance once per update: four
    accumulated micro-batches of 4 make the updates of batches of 16, and
    the optimizer's `iterations` counts those updates."""
    task = two_tasks[0]
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, strategy="finetune", seed=0
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))

    def adam_trained(recipe):
        learner.reset(strategy="finetune", seed=0)
        steps = OptimizerSteps()
        learner.learn_task(
            task.train,
            name=task.name,
            recipe=recipe,
            shuffle=False,
            verbose=0,
            callbacks=[steps],
        )
        return learner.global_state.numpy(), steps

    full = TaskRecipe(epochs=2, batch_size=16)
    expected, full_steps = adam_trained(full)
    split, split_steps = adam_trained(
        full.replace(gradient_accumulation_steps=4)
    )
    # 32 examples: 2 updates an epoch, of 1 or of 4 train steps each.
    assert full_steps.updates == full_steps.steps == [2, 4]
    assert split_steps.updates == [2, 4]
    assert split_steps.steps == [8, 16]
    for key, value in expected.items():
        np.testing.assert_allclose(split[key], value, rtol=1e-4, atol=1e-6)
    moved = [np.abs(split[k] - learner.initial_state[k]).max() for k in split]
    assert max(moved) > 1e-4
    # Adam on the micro-batches themselves (16 updates) ends elsewhere.
    small, _ = adam_trained(TaskRecipe(epochs=2, batch_size=4))
    apart = [np.abs(small[k] - expected[k]).max() for k in expected]
    assert max(apart) > 1e-4


def test_weight_decay_shrinks_by_the_decay_not_times_the_rate(
    tiny_preset, two_tasks
):
    """big_vision's decoupled decay: an update subtracts `wd * factor`,
    whatever the learning rate (Keras multiplies by it; the learner
    divides it out)."""
    task, decay = two_tasks[0], 0.01
    recipe = TaskRecipe(epochs=1, batch_size=32, learning_rate=0.05)
    learner = sgd_learner(tiny_preset)
    plain = trained(learner, task, recipe)
    learner.reset(strategy="finetune", seed=0)
    start = learner.initial_state.numpy()
    decayed = trained(learner, task, recipe.replace(weight_decay=decay))
    for key in plain:
        np.testing.assert_allclose(
            decayed[key] - plain[key], -decay * start[key], atol=1e-6
        )
    # After the task the optimizer is as compiled again: no decay.
    assert learner.optimizer.weight_decay is None
    assert training.same_optimizer(
        learner.optimizer, keras.optimizers.SGD(0.05)
    )


def test_weight_decay_follows_the_schedule_factor(tiny_preset, two_tasks):
    """Under a cosine schedule, update `k` shrinks every factor by
    `wd * s_k`, with `s_k` the schedule's factor (big_vision's decay).
    At a peak rate of 1e-9 the gradient steps are negligible, so the
    factors are the start times the product of the shrinks."""
    task, decay, peak = two_tasks[0], 0.1, 1e-9
    recipe = TaskRecipe(
        epochs=2,
        batch_size=8,
        learning_rate=peak,
        schedule="cosine",
        warmup_fraction=0.25,
        weight_decay=decay,
    )
    # 32 examples: 4 updates an epoch, 8 in all, 2 of them warming up.
    updates = recipe.num_updates(32)
    warmup = recipe.warmup_updates(updates)
    assert (updates, warmup) == (8, 2)
    factors = np.array(
        [big_vision_cosine(k, updates, warmup, 1.0) for k in range(updates)]
    )
    shrink = np.prod(1 - decay * factors)
    # A decay that ignored the factor would shrink by 0.9 ** 8 = 0.43,
    # one times the rate not at all, instead of this 0.67.
    assert abs(shrink - (1 - decay) ** updates) > 0.2
    assert abs(shrink - 1) > 0.2
    learner = sgd_learner(tiny_preset)
    start = learner.initial_state.numpy()
    decayed = trained(learner, task, recipe)
    for key, value in start.items():
        np.testing.assert_allclose(
            decayed[key], shrink * value, rtol=1e-5, atol=1e-6
        )
    assert max(np.abs(v).max() for v in start.values()) > 0.1


class LearningRates(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(np.asarray(self.model.optimizer.learning_rate)))

    def on_train_begin(self, logs=None):
        self.rates = []


def test_fit_follows_the_recipe_schedule_and_alignment_counts_updates(
    tiny_preset, two_tasks
):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, align_every=2, seed=0
    )
    task = two_tasks[0]
    learner.learn_task(task.train, name="first", epochs=1, verbose=0)
    recipe = TaskRecipe(
        epochs=2,
        batch_size=8,
        learning_rate=1e-3,
        schedule="cosine",
        warmup_fraction=0.2,
        gradient_accumulation_steps=2,
    )
    rates = LearningRates()
    report = learner.learn_task(
        two_tasks[1].train,
        name="second",
        recipe=recipe,
        callbacks=[rates],
        verbose=0,
    )
    # 32 examples: 8 micro-batches of 4 per epoch, 8 updates in all.
    assert len(rates.rates) == 16
    for micro_batch, rate in enumerate(rates.rates):
        assert rate == pytest.approx(
            big_vision_cosine(micro_batch // 2, 8, 1, 1e-3), abs=1e-9
        )
    # Every 2 updates of 8: 4 alignments, not 8 (one per 2 micro-batches).
    assert len(report.reinitialised_counts) == 4
    assert report.recipe == recipe.to_dict()
    # A task without a recipe: the compiled rate, constant.
    learner.learn_task(
        task.train, name="third", epochs=1, callbacks=[rates], verbose=0
    )
    assert rates.rates == [pytest.approx(5e-4)] * len(rates.rates)


def test_a_recipe_the_learner_cannot_follow_is_refused_first(
    tiny_preset, two_tasks
):
    learner = ContinualLearner.from_preset(tiny_preset, rank=4)
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    task = two_tasks[0]
    with pytest.raises(ValueError, match="label_smoothing"):
        learner.learn_task(
            task.train, recipe=TaskRecipe(label_smoothing=0.1), verbose=0
        )
    with pytest.raises(ValueError, match="not\\s+besides"):
        learner.learn_task(task.train, epochs=2, recipe=TaskRecipe())
    with pytest.raises(ValueError, match="TaskRecipe"):
        learner.learn_task(task.train, recipe={"epochs": 2})
    assert learner.learned_task_names == []
    assert not math.isnan(learner.optimizer.learning_rate.numpy())


def test_a_recipe_task_resumes_mid_way_as_if_never_killed(
    tiny_preset, two_tasks, tmp_path
):
    """The schedule's settings, the gradient accumulators and the
    alignment count (in updates) come back with the task's backup."""
    from test_checkpoint import KillAt

    recipe = TaskRecipe(
        epochs=2,
        batch_size=8,
        learning_rate=1e-2,
        schedule="cosine",
        warmup_fraction=0.2,
        weight_decay=1e-4,
        label_smoothing=0.1,
        gradient_accumulation_steps=2,
    )
    tests = {task.name: task.test for task in two_tasks}

    def run(run_dir=None, kill=False):
        keras.utils.set_random_seed(0)
        learner = ContinualLearner.from_preset(
            tiny_preset, rank=4, align_every=3, seed=0, run_dir=run_dir
        )
        for name, test in tests.items():
            learner.add_eval_task(name, test)
        for i, task in enumerate(two_tasks):
            killer = [KillAt(1, 2)] if kill and i == 1 else []
            learner.learn_task(
                task.train,
                name=task.name,
                recipe=recipe,
                callbacks=killer,
                verbose=0,
            )
        return learner

    expected = run()
    run_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run(run_dir, kill=True)
    resumed = ContinualLearner.resume(run_dir, eval_tasks=tests)
    report = resumed.learn_task(
        two_tasks[1].train, name=two_tasks[1].name, recipe=recipe, verbose=0
    )
    np.testing.assert_array_equal(
        resumed.evaluate_all().matrix, expected.evaluate_all().matrix
    )
    for key, value in resumed.global_state.items():
        np.testing.assert_allclose(value, expected.global_state[key], atol=1e-6)
    # 32 examples, micro-batches of 4, 2 epochs: 8 updates, 2 alignments.
    assert report.reinitialised_counts == (
        expected.task_reports[1].reinitialised_counts
    )
    assert len(report.reinitialised_counts) == 2
