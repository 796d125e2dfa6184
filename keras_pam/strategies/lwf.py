"""Learning without Forgetting: distil the previous model while training."""

from keras import ops

from keras_pam.strategies.strategy import StrategyWrapper


def distillation_loss(teacher_logits, student_logits, mask, temperature):
    """Masked `KL(teacher || student)` of temperature-softened token
    distributions, times `temperature**2` (so gradients keep their scale).

    Args:
        teacher_logits: tensor `(batch, length, vocabulary)`.
        student_logits: tensor `(batch, length, vocabulary)`.
        mask: tensor `(batch, length)`. 1 on the positions distilled.
        temperature: float. The softening temperature.

    Returns:
        A scalar: the mean KL over masked positions.
    """
    teacher = ops.cast(teacher_logits, "float32") / temperature
    student = ops.cast(student_logits, "float32") / temperature
    log_teacher = ops.log_softmax(teacher, axis=-1)
    log_student = ops.log_softmax(student, axis=-1)
    kl = ops.sum(ops.exp(log_teacher) * (log_teacher - log_student), axis=-1)
    mask = ops.cast(mask, "float32")
    total = ops.sum(kl * mask) / ops.maximum(ops.sum(mask), 1.0)
    return total * temperature**2


class LwF(StrategyWrapper):
    """Add a distillation loss toward the previous global model (LwF).

    Before each task after the first, the previous model's token logits on
    the task's training inputs are computed once; training then adds
    `weight * KL(previous || current)` on the answer positions, with
    temperature `temperature`, to the task loss.

    The teacher logits are kept for the whole split (`N x length x
    vocabulary` floats), which suits small vocabularies; for a real
    PaliGemma vocabulary (257k) this is the method's memory limit here.

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

    def extra_inputs(self, examples, task):
        extra = dict(self.inner.extra_inputs(examples, task))
        if task.index > 1:
            # The learner holds the global adapter here: the previous model.
            extra["teacher_logits"] = self.learner.predict_logits(examples)
        return extra

    def extra_loss(self, x, y, y_pred, sample_weight):
        loss = self.inner.extra_loss(x, y, y_pred, sample_weight)
        if "teacher_logits" not in x:
            return loss
        distill = self.weight * distillation_loss(
            x["teacher_logits"], y_pred, sample_weight, self.temperature
        )
        return distill if loss is None else loss + distill

    def get_config(self):
        return {
            **super().get_config(),
            "weight": self.weight,
            "temperature": self.temperature,
        }
