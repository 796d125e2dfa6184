"""O-LoRA: a new LoRA per task, orthogonal to the frozen earlier ones."""

import math
import types

import keras
import numpy as np
from keras import ops

from keras_pam.distribution.backend import compile_function
from keras_pam.merging.lora import adapted_layers
from keras_pam.merging.lora import initial_adapter
from keras_pam.merging.lora_batch_callback import LoRABatchCallback
from keras_pam.strategies.strategy import Strategy

PAST_A_NAME = "olora_past_a"
PAST_B_NAME = "olora_past_b"


def orthogonality_loss(past_a_factors, a_factors):
    """O-LoRA's penalty `sum_i |A_i^T A_t|` over every adapted layer.

    Each factor's rank axis is the last one; it is flattened to
    `(fan_in, rank)`. The earlier tasks' factors `A_1 ... A_{t-1}` of a
    layer are its `past` factor, concatenated along the rank, so one Gram
    matrix `past^T A_t` holds every `A_i^T A_t`; columns of tasks not yet
    learned are zero and add nothing.

    Args:
        past_a_factors: list of tensors. Per layer, the earlier tasks' `A`
            factors concatenated along the rank (last) axis.
        a_factors: list of tensors. Per layer, the current task's `A`.

    Returns:
        A scalar: the sum of the absolute entries of every Gram matrix.
    """
    total = 0.0
    for past, a in zip(past_a_factors, a_factors, strict=True):
        past = ops.reshape(ops.cast(past, "float32"), (-1, past.shape[-1]))
        a = ops.reshape(ops.cast(a, "float32"), (-1, a.shape[-1]))
        total = total + ops.sum(ops.abs(ops.matmul(ops.transpose(past), a)))
    return total


def _rank_mask(shape, columns, is_a):
    """Broadcast a `(rank,)` mask onto a factor: last axis of `A`, first of
    `B`."""
    if is_a:
        return np.broadcast_to(columns, shape)
    return np.broadcast_to(
        columns.reshape((-1,) + (1,) * (len(shape) - 1)), shape
    )


class FreezeRankSlices(LoRABatchCallback):
    """Hold some rank columns of every LoRA factor at fixed values.

    After each training batch, entries outside the trainable columns are
    written back to `frozen`, in one compiled update through `self.model`
    (so that the JAX backend keeps the write). `OLoRA` no longer uses it
    (each task has a LoRA of its own); it stays a general callback.

    Args:
        frozen: `AdapterState`. The values the frozen entries keep.
        trainable_columns: array `(rank,)` of bool. The columns that train.
    """

    def __init__(self, frozen, trainable_columns):
        super().__init__()
        self.frozen = frozen
        self.trainable_columns = np.asarray(trainable_columns, bool)

    def on_train_begin(self, logs=None):
        self._paths = list(self.lora_variables())
        self._frozen = [
            ops.convert_to_tensor(self.frozen[k]) for k in self._paths
        ]
        self._masks = [
            ops.convert_to_tensor(
                _rank_mask(
                    self.frozen[k].shape,
                    self.trainable_columns,
                    k.endswith("lora_kernel_a"),
                )
            )
            for k in self._paths
        ]

        def restore(current, frozen, masks):
            return [
                ops.where(m, c, f) for c, f, m in zip(current, frozen, masks)
            ]

        self._restore = compile_function(restore)

    def on_train_batch_end(self, batch, logs=None):
        variables = self.lora_variables()
        values = self._restore(
            [variables[k].value for k in self._paths],
            self._frozen,
            self._masks,
        )
        for path, value in zip(self._paths, values):
            variables[path].assign(value)


def _olora_call(self, inputs, training=None):
    """The forward of a layer patched by `add_past_loras`: the layer's own
    (its kernel and its live LoRA), plus the frozen earlier LoRAs."""
    outputs = self._olora_base_call(inputs, training=training)
    # `scale * past_a @ past_b` is `sum_i scale * A_i B_i`, the earlier
    # tasks' LoRAs, as Keras adds its own LoRA to the kernel.
    delta = ops.matmul(self.olora_past_a, self.olora_past_b)
    delta = ops.cast(delta * self._olora_scale, inputs.dtype)
    if self._olora_equation is None:
        past = ops.matmul(inputs, delta)
    else:
        past = ops.einsum(self._olora_equation, inputs, delta)
    return outputs + ops.cast(past, outputs.dtype)


def add_past_loras(layer, num_slots):
    """Give a LoRA layer `num_slots` frozen LoRAs of its own rank.

    Two non-trainable, zero-initialised variables are added to the layer:
    `olora_past_a` (`lora_kernel_a`'s shape with rank `r * num_slots`)
    and `olora_past_b` (`(r * num_slots, units)`), where slot `i` holds
    task `i + 1`'s `A` in the rank columns `i * r` to `(i + 1) * r - 1`
    and its `B` in those rows. The layer's `call` is replaced, on this
    instance only, by its own forward plus
    `(alpha / r) * x · (past_a past_b)`, which is the sum of the stored
    LoRAs; empty slots (zero) add nothing.

    Args:
        layer: `keras.layers.Dense` or `keras.layers.EinsumDense`. A built
            layer with LoRA enabled and a linear activation.
        num_slots: int. The number of LoRAs it can hold.

    Returns:
        The tuple `(past_a, past_b)` of the new variables.
    """
    if not getattr(layer, "lora_enabled", False):
        raise ValueError(f"Layer {layer.name!r} has no LoRA; enable it first.")
    if hasattr(layer, PAST_A_NAME):
        raise ValueError(
            f"Layer {layer.name!r} already has O-LoRA's earlier LoRAs: "
            "attach O-LoRA to a fresh model."
        )
    if isinstance(layer, keras.layers.EinsumDense):
        equation = layer.equation
    elif isinstance(layer, keras.layers.Dense):
        equation = None
    else:
        raise ValueError(
            "O-LoRA adapts `Dense` and `EinsumDense` layers. Got "
            f"{type(layer).__name__} ({layer.name!r})."
        )
    # The earlier LoRAs are added after the layer's output, which is
    # right only where nothing non-linear follows the kernel.
    if layer.activation not in (None, keras.activations.linear):
        raise ValueError(
            f"O-LoRA adds the earlier LoRAs to the output of layer "
            f"{layer.name!r}, which needs a linear activation."
        )
    rank = layer.lora_kernel_b.shape[0]
    a_shape = tuple(layer.lora_kernel_a.shape[:-1]) + (rank * num_slots,)
    b_shape = (rank * num_slots, layer.lora_kernel_b.shape[-1])
    layer._tracker.unlock()
    try:
        past_a = layer.add_weight(
            name=PAST_A_NAME,
            shape=a_shape,
            initializer="zeros",
            dtype="float32",
            trainable=False,
        )
        past_b = layer.add_weight(
            name=PAST_B_NAME,
            shape=b_shape,
            initializer="zeros",
            dtype="float32",
            trainable=False,
        )
        layer.olora_past_a = past_a
        layer.olora_past_b = past_b
    finally:
        layer._tracker.lock()
    layer._olora_scale = layer.lora_alpha / rank
    layer._olora_equation = equation
    layer._olora_base_call = layer.call
    layer.call = types.MethodType(_olora_call, layer)
    return past_a, past_b


class OLoRA(Strategy):
    """O-LoRA: every task trains a LoRA of its own, orthogonal to the
    earlier ones.

    O-LoRA (Wang et al., 2023) as the PAM paper describes it: "it adds new
    LoRA module for each new task, while optimizing its weights to be
    orthogonal to previously added LoRA modules". Task `t` trains a fresh
    LoRA `(A_t, B_t)` on every adapted layer, of the learner's rank `r`
    (the rank of every baseline; it is not divided among the tasks), while
    the LoRAs of tasks `1 ... t-1` stay frozen in the forward pass. The
    loss is

    `task_loss + weight * mean(sample_weight) * sum_layers sum_i |A_i^T A_t|`

    over the earlier tasks `i < t`: O-LoRA's penalty, on `A` only.
    `mean(sample_weight)` normalises the penalty as Keras normalises the
    task loss: the cross-entropy is summed over the answer tokens and
    divided by batch x length, which is O-LoRA's mean over the answer
    tokens times the fraction of answer tokens. The penalty is scaled by
    the same fraction, so that its weight against the per-token
    cross-entropy is O-LoRA's, whatever the padding. The model then
    evaluates the sum of every learned task's LoRA, as O-LoRA's inference
    does: parameters grow with the tasks, `t` LoRAs of rank `r` after task
    `t`.

    Where the LoRAs live. `attach` gives every adapted layer two frozen
    variables with room for `num_tasks` LoRAs of rank `r`
    (`add_past_loras`), zero until used, and adds them to the layer's
    forward. Task `t` trains the learner's own adapter from a fresh start:
    task 1 from the learner's initial adapter, task `t > 1` with `A` drawn
    as the initial one is (He-uniform, from the learner's seed and `t`)
    and `B = 0`. `end_task` copies the trained LoRA into slot `t`, and
    the learner's own adapter goes back to the initial one, whose `B = 0`
    adds nothing. So the learner's global adapter (`global_state`, and
    what `save_adapter` writes) holds none of the tasks' LoRAs: they are
    the strategy's state (`get_state`, kept in the learner's checkpoints).
    The pre-merge accuracy of task `t` is that of the earlier LoRAs plus
    task `t`'s, which is also its post-merge accuracy.

    Departures from O-LoRA's code: a new `A` is drawn as the learner's
    initial one (Keras's He-uniform), not with PyTorch's initialiser; the
    room for all `num_tasks` LoRAs is allocated when the strategy is
    attached (O-LoRA concatenates each new LoRA to the old ones after its
    task), so their memory is held from the first task. Every LoRA has
    the scale `alpha / r`. Since the strategy adds weights to the model, a
    learner that ran it cannot be `reset`, and evaluation tasks should be
    registered before learning: a zero-shot score taken later (the
    initial adapter) would include the learned LoRAs. The task report's
    misaligned fractions compare task `t`'s LoRA with the initial adapter
    (the previous global one), and mean nothing here.

    Args:
        num_tasks: int. The most tasks the sequence has: the number of
            LoRAs the model has room for.
        weight: float. Weight of the orthogonality penalty. Defaults to
            `0.5` (O-LoRA's code).

    Example:
    ```python
    # A rank-8 LoRA per task, for up to 6 tasks.
    learner = ContinualLearner(causal_lm, rank=8, strategy=OLoRA(6))
    ```
    """

    name = "olora"
    adds_weights = True

    def __init__(self, num_tasks, weight=0.5):
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int):
            raise ValueError(f"`num_tasks` must be an int. Got {num_tasks!r}")
        if num_tasks < 1:
            raise ValueError(f"`num_tasks` must be >= 1. Got {num_tasks}")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(
                f"`weight` must be a finite number >= 0. Got {weight!r}"
            )
        self.num_tasks = num_tasks
        self.weight = weight

    def check_settings(self, rank=None, num_tasks=None):
        """Raise `ValueError` on settings this strategy cannot run.

        Called before any work (`strategies.registry.check_strategy`), so
        that a study of many methods does not stop at this one.

        Args:
            rank: int. The learner's LoRA rank: the rank of every task's
                LoRA. Any positive int. Defaults to `None` (not checked).
            num_tasks: int. The length of the sequence to learn; at most
                the strategy's `num_tasks`. Defaults to `None` (not
                checked).
        """
        if rank is not None and (
            isinstance(rank, bool) or not isinstance(rank, int) or rank < 1
        ):
            raise ValueError(f"`rank` must be a positive int. Got {rank!r}")
        if num_tasks is not None and num_tasks > self.num_tasks:
            raise ValueError(
                f"O-LoRA has room for `num_tasks`={self.num_tasks} LoRAs; "
                f"the sequence has {num_tasks} tasks."
            )

    def attach(self, learner):
        super().attach(learner)
        self.check_settings(rank=learner.rank)
        self.layers = adapted_layers(learner.causal_lm.backbone)
        if any(hasattr(layer, PAST_A_NAME) for layer in self.layers):
            raise ValueError(
                "The model already holds O-LoRA's earlier LoRAs: attach "
                "O-LoRA to a fresh model."
            )
        for layer in self.layers:
            add_past_loras(layer, self.num_tasks)

    def past_variables(self):
        """Map variable path to variable for every layer's stored LoRAs."""
        variables = {}
        for layer in self.layers:
            for variable in (layer.olora_past_a, layer.olora_past_b):
                variables[variable.path] = variable
        return variables

    def start_state(self, task):
        if task.index > self.num_tasks:
            raise ValueError(
                f"O-LoRA was set up for `num_tasks`={self.num_tasks}; task "
                f"{task.index} ({task.name!r}) has no room for its LoRA."
            )
        if task.index == 1:
            return self.learner.initial_state
        seed = self.learner.seed if self.learner.seed is not None else 0
        # One independent stream per (run seed, task).
        task_seed = np.random.SeedSequence([int(seed), task.index])
        return initial_adapter(
            self.learner.causal_lm, int(task_seed.generate_state(1)[0])
        )

    def extra_loss(self, x, y, y_pred, sample_weight):
        penalty = orthogonality_loss(
            [layer.olora_past_a.value for layer in self.layers],
            [layer.lora_kernel_a.value for layer in self.layers],
        )
        if sample_weight is not None:
            penalty = penalty * ops.mean(ops.cast(sample_weight, "float32"))
        return self.weight * penalty

    def merge(self, temporary, task):
        # The task's LoRA moves into the frozen slots (`end_task`): the
        # learner's own adapter must add nothing on top of them.
        return self.learner.initial_state

    def end_task(self, temporary, task):
        start = (task.index - 1) * self.learner.rank
        slot = slice(start, start + self.learner.rank)
        for layer in self.layers:
            past_a = np.array(ops.convert_to_numpy(layer.olora_past_a))
            past_b = np.array(ops.convert_to_numpy(layer.olora_past_b))
            past_a[..., slot] = temporary[layer.lora_kernel_a.path]
            past_b[slot] = temporary[layer.lora_kernel_b.path]
            layer.olora_past_a.assign(past_a)
            layer.olora_past_b.assign(past_b)

    def get_state(self):
        return {
            "past": {
                path: np.array(ops.convert_to_numpy(v), copy=True)
                for path, v in self.past_variables().items()
            }
        }

    def set_state(self, state):
        variables = self.past_variables()
        values = state["past"]
        if set(values) != set(variables):
            raise ValueError(
                "The saved O-LoRA state does not have this model's LoRAs."
            )
        for path, variable in variables.items():
            variable.assign(values[path])

    def get_config(self):
        return {"num_tasks": self.num_tasks, "weight": self.weight}

    @classmethod
    def from_settings(cls, alignment, num_tasks=None, num_experts=8):
        if num_tasks is None:
            raise ValueError(
                "O-LoRA keeps a LoRA per task: pass `num_tasks` (the length "
                "of the sequence)."
            )
        return cls(num_tasks)
