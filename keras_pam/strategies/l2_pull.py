"""L2 pull: averaging whose training is pulled toward the global adapter."""

import math

import numpy as np
from keras import ops

from keras_pam.distribution.layout import device_copy
from keras_pam.distribution.layout import is_distributed
from keras_pam.merging.in_step_update import InStepUpdate
from keras_pam.merging.lora import lora_variables
from keras_pam.merging.lora import zero_copies
from keras_pam.strategies.average import Average

# `benchmarks/l2_pull_scale.py`: the weight at which the pull's gradient,
# at the displacement a task reaches without it, is as large as the task
# loss's gradient when the task starts. On the testbed (`average`, orders
# 1-3, seed 0) it is 0.03 to 2.2 over tasks 2-6, geometric mean 0.27,
# whose nearest power of ten is 0.1.
DEFAULT_WEIGHT = 0.1


def l2_pull_loss(anchors, factors):
    """The squared L2 distance `sum (W' - G)^2` over every factor entry.

    Args:
        anchors: list of tensors. The global adapter's factors `G`.
        factors: list of tensors. The trained factors `W'`, in the same
            order and shapes.

    Returns:
        A float32 scalar.

    Example:
    ```python
    l2_pull_loss([np.zeros((2, 2))], [np.ones((2, 2))])  # 4.0
    ```
    """
    total = ops.zeros((), "float32")
    for anchor, factor in zip(anchors, factors, strict=True):
        difference = ops.cast(factor, "float32") - ops.cast(anchor, "float32")
        total = total + ops.sum(ops.square(difference))
    return total


def l2_distance(a, b):
    """`||a - b||_2` over every entry of two adapter states, in float64.

    Args:
        a: `AdapterState` or dict. Path to factor.
        b: `AdapterState` or dict. The same paths and shapes.

    Returns:
        A float.
    """
    squares = 0.0
    for path in a:
        difference = np.asarray(
            ops.convert_to_numpy(a[path]), "float64"
        ) - np.asarray(ops.convert_to_numpy(b[path]), "float64")
        squares += float(np.sum(np.square(difference)))
    return math.sqrt(squares)


class PullAnchor(InStepUpdate):
    """The global adapter `G_{t-1}` that the train step pulls toward.

    One non-trainable variable per LoRA factor, laid out like it under a
    `keras.distribution`. Tracked by the learner (it is `L2Pull`'s in-step
    update), they are part of the training state: the compiled train step
    reads their values (on JAX, as inputs of the step), so a new task's
    anchor is an assignment and never a new trace. The step updates
    nothing: the anchor changes between tasks only (`hold`).

    Args:
        lora_variables: dict. Path to LoRA factor, as
            `keras_pam.lora.lora_variables(model)` returns.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    ```python
    anchor = PullAnchor(lora_variables(model))
    anchor.hold(global_state)
    ```
    """

    def __init__(self, lora_variables, **kwargs):
        super().__init__(**kwargs)
        self.paths = list(lora_variables)
        self.anchors = zero_copies(lora_variables, "l2_pull_anchor")

    def hold(self, state):
        """Pull toward the factors of `state` (an `AdapterState`)."""
        for path, anchor in zip(self.paths, self.anchors):
            value = state[path]
            if is_distributed(value):
                # The step donates its state's buffers: a copy of its own.
                value = device_copy(value)
            anchor.assign(value)

    def update(self, variables, optimizer=None):
        """Nothing to update inside the step: the loss reads the anchor."""

    def stateless_update(self, model, state):
        return state

    def reset(self):
        for anchor in self.anchors:
            anchor.assign(ops.zeros(anchor.shape, anchor.dtype))


class L2Pull(Average):
    """Averaging with an L2 pull toward the global adapter (the paper's
    "regularisation is not alignment" comparison, Fig. 4).

    As `Average`, task `t` clones the global adapter, trains it and
    averages it back in: `G_t = (G_{t-1} + W') / 2`. Training adds to the
    task loss

    `weight * mean(sample_weight) * sum_entries (W' - G_{t-1})^2`

    over every entry of every LoRA factor (`l2_pull_loss`): the
    regularisation of EWC and MAS (the paper's citations) with the same
    importance for every entry, which keeps `W'` near `G_{t-1}` without
    asking it to keep `G_{t-1}`'s signs, as PAM's alignment does. The
    paper states no form; a sum, as EWC's and MAS's penalties are, makes
    the pull on one entry (`2 * weight * (W' - G)`) independent of the
    adapter's size, so a weight means the same at every rank and model,
    where a mean would weaken it with every entry added.
    `mean(sample_weight)` normalises the penalty as Keras normalises the
    task loss (the answer tokens' sum divided by batch x length, as
    `OLoRA` does): its weight is against the per answer-token
    cross-entropy, whatever the padding. The pull acts from the first
    task, toward the initial adapter `G_0` there.

    The default weight follows one rule, measured once on the testbed by
    `benchmarks/l2_pull_scale.py`: at the displacement `D = W' - G` a
    task reaches without the pull (`average`), the pull's gradient
    `2 * weight * ||D||` equals the task loss's gradient norm when the
    task starts. Over the tasks after the first of the testbed's three
    orders it is 0.03 to 2.2, geometric mean 0.27; the nearest power of
    ten, `0.1`, is the default.

    `G_{t-1}` lives in the learner's in-step update, a `PullAnchor`
    (non-trainable variables the compiled step reads; set when each task
    starts, a resumed one's too), so a new task never retraces the step.
    The task report carries the misaligned fractions of every method
    (`misaligned_fraction_all` and `_important` at `p=0.5`, per tensor)
    and, in `diagnostics`, `l2_distance_to_global`: `||W' - G_{t-1}||`.

    Args:
        weight: float. Weight of the pull, a finite number > 0 (a weight
            of 0 is `Average`). Defaults to `0.1`.
        merge: str or callable. The merge. Defaults to `"average"`.
        **merge_kwargs: keyword arguments bound to the merge function.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=L2Pull(weight=0.1))
    # By name, with the weight `keras-pam run --l2-weight` gives:
    get_strategy("l2-pull", l2_weight=1.0)
    ```
    """

    name = "l2-pull"
    method_settings = ("l2_weight",)

    def __init__(self, weight=DEFAULT_WEIGHT, merge="average", **merge_kwargs):
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise ValueError(
                f"`weight` must be a finite number > 0 (0 is `Average`). "
                f"Got {weight!r}"
            )
        super().__init__(merge, **merge_kwargs)
        self.weight = float(weight)

    def build_in_step_update(self):
        return PullAnchor(lora_variables(self.learner.causal_lm))

    def callbacks(self, task):
        # Once per `learn_task`, before `fit`, a resumed task's too.
        self.learner.in_step_update.hold(task.previous_global)
        return super().callbacks(task)

    def extra_loss(self, x, y, y_pred, sample_weight):
        anchor = self.learner.in_step_update
        variables = lora_variables(self.learner.causal_lm)
        penalty = l2_pull_loss(
            [a.value for a in anchor.anchors],
            [variables[path].value for path in anchor.paths],
        )
        if sample_weight is not None:
            penalty = penalty * ops.mean(ops.cast(sample_weight, "float32"))
        return self.weight * penalty

    def task_diagnostics(self, temporary, task):
        return {
            **super().task_diagnostics(temporary, task),
            "l2_distance_to_global": l2_distance(
                temporary, task.previous_global
            ),
        }

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}

    @classmethod
    def from_settings(
        cls, alignment, num_tasks=None, num_experts=8, l2_weight=None
    ):
        if l2_weight is None:
            return cls()
        return cls(l2_weight)
