"""LwF: the teacher is the previous global adapter, run inside the train
step, and the distillation is normalised as the task loss."""

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import data as data_lib
from keras_pam import strategies
from keras_pam.lora import AdapterState
from keras_pam.strategies import lwf


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def numpy_distillation(teacher, student, weights, temperature):
    """`T**2 * sum(w * KL(teacher || student)) / (batch * length)`."""
    lt = log_softmax(teacher / temperature)
    ls = log_softmax(student / temperature)
    kl = (np.exp(lt) * (lt - ls)).sum(-1)
    return temperature**2 * (kl * weights).sum() / weights.size


def numpy_cross_entropy(labels, logits, weights):
    """Keras's sparse cross-entropy with sample weights, numpy."""
    picked = np.take_along_axis(log_softmax(logits), labels[..., None], -1)
    return -(picked[..., 0] * weights).sum() / weights.size


def test_distillation_loss_matches_numpy():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(2, 3, 5)).astype("float32")
    student = rng.normal(size=(2, 3, 5)).astype("float32")
    mask = np.array([[1, 1, 0], [0, 1, 0]], "float32")
    same = lwf.distillation_loss(teacher, teacher, mask, 2.0)
    assert abs(float(keras.ops.convert_to_numpy(same))) < 1e-6
    got = lwf.distillation_loss(teacher, student, mask, 2.0)
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(got)),
        numpy_distillation(teacher, student, mask, 2.0),
        rtol=1e-5,
    )


def test_distillation_weight_does_not_change_with_padding():
    """Padding a batch scales the distillation as it scales the task loss."""
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(2, 4, 6)).astype("float32")
    student = rng.normal(size=(2, 4, 6)).astype("float32")
    labels = rng.integers(0, 6, size=(2, 4))
    mask = np.array([[0, 1, 1, 1], [0, 0, 1, 1]], "float32")
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def ratio(pad):
        def padded(a):
            widths = [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)
            return np.pad(a, widths)

        distill = lwf.distillation_loss(
            padded(teacher), padded(student), padded(mask), 2.0
        )
        task = cross_entropy(
            padded(labels), padded(student), sample_weight=padded(mask)
        )
        return float(keras.ops.convert_to_numpy(distill)) / float(
            keras.ops.convert_to_numpy(task)
        )

    np.testing.assert_allclose(ratio(0), ratio(12), rtol=1e-5)


class HoldAdapter(keras.callbacks.Callback):
    """Trains from `state` instead of the strategy's start adapter."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_train_begin(self, logs=None):
        self.state.assign_to(self.model)


def new_learner(tiny_preset, strategy, learning_rate=1e-2, run_dir=None):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, strategy=strategy, run_dir=run_dir
    )
    learner.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return learner


def test_the_train_step_distils_the_previous_global(tiny_preset, two_tasks):
    """The loss of one step is the numpy cross-entropy plus the numpy
    distillation between the previous global adapter and the adapter
    trained, both normalised by `batch * length`."""
    weight, temperature = 0.7, 2.0
    strategy = strategies.LwF(strategies.Finetune(), weight, temperature)
    learner = new_learner(tiny_preset, strategy)
    first, second = two_tasks
    learner.learn_task(first.train, name=first.name, verbose=0)
    # One step, without updates, from an adapter unlike the teacher.
    learner.compile(optimizer=keras.optimizers.SGD(0.0))
    teacher = learner.global_state
    rng = np.random.default_rng(0)
    student = teacher.map(
        lambda t: t + rng.normal(0, 0.5, np.shape(t)).astype("float32")
    )
    examples = second.train
    size = len(examples["prompts"])
    teacher_logits = learner.predict_logits(examples)
    with learner.holding_adapter(student, then=teacher):
        student_logits = learner.predict_logits(examples)
    report = learner.learn_task(
        examples,
        name=second.name,
        batch_size=size,
        shuffle=False,
        verbose=0,
        callbacks=[HoldAdapter(student)],
    )
    dataset = data_lib.training_dataset(
        examples, size, learner.causal_lm.preprocessor, shuffle=False
    )
    _, labels, weights = next(iter(dataset))
    labels = np.asarray(labels).astype("int64")
    weights = np.asarray(weights).astype("float64")
    teacher_logits = teacher_logits.astype("float64")
    student_logits = student_logits.astype("float64")
    expected = numpy_cross_entropy(labels, student_logits, weights)
    distill = numpy_distillation(
        teacher_logits, student_logits, weights, temperature
    )
    assert distill > 1e-3  # The teacher is not the student.
    expected += weight * distill
    np.testing.assert_allclose(report.history["loss"][0], expected, rtol=1e-4)


def test_nothing_per_example_is_kept_on_the_host(
    tiny_preset, two_tasks, monkeypatch
):
    strategy = strategies.LwF(strategies.Finetune())
    learner = new_learner(tiny_preset, strategy)
    first, second = two_tasks
    learner.learn_task(first.train, name=first.name, verbose=0)

    def refuse(*args, **kwargs):
        raise AssertionError("LwF predicted the teacher on the host.")

    monkeypatch.setattr(learner, "predict_logits", refuse)
    task = strategies.TaskContext(
        second.name, 2, second.train, previous_global=learner.global_state
    )
    assert strategy.extra_inputs(second.train, task) == {}
    report = learner.learn_task(second.train, name=second.name, verbose=0)
    assert np.isfinite(report.history["loss"][0])


class KillAt(keras.callbacks.Callback):
    """Simulates a pre-emption: raises after batch `batch` of `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt


def test_a_resumed_task_distils_from_the_previous_global(
    tiny_preset, two_tasks, tmp_path
):
    """Killed in task 2's second epoch and resumed from its first epoch's
    backup, the run ends where the uninterrupted one does."""

    def learn(learner, task, callbacks=None):
        learner.learn_task(
            task.train,
            name=task.name,
            epochs=2,
            batch_size=8,
            verbose=0,
            callbacks=callbacks,
        )

    first, second = two_tasks
    uninterrupted = new_learner(tiny_preset, "lwf")
    for task in two_tasks:
        learn(uninterrupted, task)
    run_dir = str(tmp_path / "run")
    learner = new_learner(tiny_preset, "lwf", run_dir=run_dir)
    learn(learner, first)
    with pytest.raises(KeyboardInterrupt):
        learn(learner, second, callbacks=[KillAt(1, 1)])
    del learner
    resumed = ContinualLearner.resume(run_dir)
    assert resumed.learned_task_names == [first.name]
    learn(resumed, second)
    for key, value in resumed.global_state.items():
        np.testing.assert_allclose(
            value, uninterrupted.global_state[key], atol=1e-6
        )


def test_a_reset_learner_reuses_the_teacher_variables(tiny_preset):
    learner = new_learner(tiny_preset, "lwf")
    count = len(learner.non_trainable_variables)
    learner.reset(strategy="lwf+pam")
    learner.reset(strategy="lwf")
    assert len(learner.non_trainable_variables) == count
    assert isinstance(
        getattr(learner, lwf.TEACHER_ATTRIBUTE), lwf.TeacherAdapter
    )
    assert AdapterState.from_model(learner).num_entries > 0
