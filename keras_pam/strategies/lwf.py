"""Learning without Forgetting: distil the previous model while training."""

import keras
from keras import ops

from keras_pam.distribution.layout import device_copy
from keras_pam.distribution.layout import is_distributed
from keras_pam.merging.lora import lora_variables
from keras_pam.merging.lora import zero_copies
from keras_pam.strategies.strategy import StrategyWrapper

# The attribute of the learner that holds the teacher's factors.
TEACHER_ATTRIBUTE = "_lwf_teacher"


def distillation_loss(teacher_logits, student_logits, mask, temperature):
    """Masked `KL(teacher || student)` of temperature-softened token
    distributions, normalised as Keras's cross-entropy task loss.

    With `KL_bl` the KL of token `l` of example `b` and `w_bl` its weight,

    `loss = temperature**2 * sum_bl(w_bl * KL_bl) / (batch * length)`,

    the reduction (`"sum_over_batch_size"`) of
    `keras.losses.SparseCategoricalCrossentropy` with the same
    `sample_weight`: padding a batch to a longer sequence scales both
    losses alike, so the distillation's weight relative to the task loss
    does not change. `temperature**2` keeps the gradients' scale.

    Args:
        teacher_logits: tensor `(batch, length, vocabulary)`.
        student_logits: tensor `(batch, length, vocabulary)`.
        mask: tensor `(batch, length)`. The token weights (1 on the answer
            positions distilled), or `None` for all tokens.
        temperature: float. The softening temperature.

    Returns:
        A scalar.
    """
    teacher = ops.cast(teacher_logits, "float32") / temperature
    student = ops.cast(student_logits, "float32") / temperature
    log_teacher = ops.log_softmax(teacher, axis=-1)
    log_student = ops.log_softmax(student, axis=-1)
    kl = ops.sum(ops.exp(log_teacher) * (log_teacher - log_student), axis=-1)
    if mask is not None:
        kl = kl * ops.reshape(ops.cast(mask, "float32"), ops.shape(kl))
    return ops.mean(kl) * temperature**2


class TeacherAdapter(keras.layers.Layer):
    """The teacher's LoRA factors, as non-trainable variables.

    One variable per LoRA factor of the model, laid out like it under a
    `keras.distribution`, and a flag `active`. Tracked by the learner, they
    are part of the training state: the compiled train step reads their
    values (on JAX, as inputs of the step), so a new teacher is an
    assignment and never a new trace.

    Args:
        lora_variables: dict. Path to LoRA factor, as
            `keras_pam.lora.lora_variables(model)` returns.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, lora_variables, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.paths = list(lora_variables)
        self.factors = zero_copies(lora_variables, "lwf_teacher")
        self.active = keras.Variable(
            0, dtype="int32", trainable=False, name="lwf_teacher_active"
        )
        self.built = True

    def matches(self, lora_variables):
        """Whether it holds factors of these paths and shapes."""
        return self.paths == list(lora_variables) and all(
            tuple(f.shape) == tuple(lora_variables[p].shape)
            for p, f in zip(self.paths, self.factors)
        )

    def set_teacher(self, state):
        """Hold the factors of `state` (an `AdapterState`), or none."""
        if state is None:
            self.active.assign(0)
            return
        for path, factor in zip(self.paths, self.factors):
            value = state[path]
            if is_distributed(value):
                # The step donates its state's buffers: a copy of its own.
                value = device_copy(value)
            factor.assign(value)
        self.active.assign(1)


class LwF(StrategyWrapper):
    """Add a distillation loss toward the previous global model (LwF).

    On every task after the first, the train step adds

    `weight * temperature**2 * sum_bl(w_bl * KL_bl) / (batch * length)`

    to the task loss, where `KL_bl = KL(previous || current)` of token `l`
    of example `b`, both token distributions softened by `temperature`,
    and `w_bl` the task loss's sample weight (1 on the answer tokens): the
    normalisation of Keras's cross-entropy task loss, so the weight of the
    distillation does not change with padding (see `distillation_loss`).

    The teacher is the previous global adapter (`TaskContext.
    previous_global`), also when a task killed mid-way is resumed. Its
    logits are computed inside the train step, by a second, gradient-free
    forward pass of the same batch (`stateless_call`) with the teacher's
    LoRA factors in place of the trained ones; nothing per example is kept
    on the host. `attach` adds the teacher's factors to the learner as
    non-trainable variables (`TeacherAdapter`, one per LoRA factor, so a
    new teacher never retraces the step), which `callbacks` sets at the
    start of every task. They stay on a `reset` learner (unused by other
    methods) and are reused by the next LwF. Other trainable weights (none
    in the methods LwF wraps) keep their current values in the teacher.

    Args:
        inner: `Strategy`. The method it adds distillation to (`Finetune` for
            `lwf`, `PAM` for `lwf+pam`).
        weight: float. Weight of the distillation loss. Defaults to `1.0`.
        temperature: float. Softmax temperature. Defaults to `2.0`.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=LwF(PAM()))
    ```
    """

    prefix = "lwf"

    def __init__(self, inner, weight=1.0, temperature=2.0):
        super().__init__(inner)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0. Got {temperature}")
        self.weight = weight
        self.temperature = temperature
        self.teacher = None

    def attach(self, learner):
        super().attach(learner)
        factors = lora_variables(learner.causal_lm)
        teacher = getattr(learner, TEACHER_ATTRIBUTE, None)
        if teacher is None or not teacher.matches(factors):
            # Tracked by the learner, so the step's state holds it. A
            # model built by `build` locks its tracker: opened for this
            # one slot, and left as it was.
            tracker = learner._tracker
            locked = tracker.locked
            tracker.unlock()
            try:
                setattr(learner, TEACHER_ATTRIBUTE, TeacherAdapter(factors))
            finally:
                if locked:
                    tracker.lock()
            teacher = getattr(learner, TEACHER_ATTRIBUTE)
        teacher.set_teacher(None)
        self.teacher = teacher
        # The trainable variables the teacher replaces, by identity.
        self._teacher_of = {
            id(factors[path]): factor
            for path, factor in zip(teacher.paths, teacher.factors)
        }

    def callbacks(self, task):
        # Once per `learn_task`, before `fit`, a resumed task's too: the
        # teacher is `G_{t-1}`, whatever adapter the model then holds.
        previous = task.previous_global if task.index > 1 else None
        self.teacher.set_teacher(previous)
        return self.inner.callbacks(task)

    def end_task(self, temporary, task):
        self.inner.end_task(temporary, task)
        # A `fit` outside `learn_task` distils from no stale teacher.
        self.teacher.set_teacher(None)

    def teacher_logits(self, x):
        """The teacher's logits on the inputs `x`, without gradients."""
        model = self.learner
        trainable = [
            self._teacher_of.get(id(v), v).value
            for v in model.trainable_variables
        ]
        non_trainable = [v.value for v in model.non_trainable_variables]
        logits, _ = model.stateless_call(
            trainable, non_trainable, x, training=False
        )
        return ops.stop_gradient(logits)

    def distillation(self, x, y_pred, sample_weight):
        """The weighted distillation term of a batch: `0` on the first
        task (no teacher), where the teacher's pass does not run."""

        def distil():
            loss = distillation_loss(
                self.teacher_logits(x),
                y_pred,
                sample_weight,
                self.temperature,
            )
            return ops.cast(loss, "float32") * self.weight

        def skip():
            return ops.zeros((), "float32")

        return ops.cond(ops.greater(self.teacher.active.value, 0), distil, skip)

    def extra_loss(self, x, y, y_pred, sample_weight):
        loss = self.inner.extra_loss(x, y, y_pred, sample_weight)
        distill = self.distillation(x, y_pred, sample_weight)
        return distill if loss is None else loss + distill

    def get_config(self):
        return {
            **super().get_config(),
            "weight": self.weight,
            "temperature": self.temperature,
        }
