"""O-LoRA: a new LoRA per task, orthogonal to the frozen earlier ones."""

import numpy as np
from keras import ops

from keras_pam.lora import AdapterState
from keras_pam.lora import lora_variables
from keras_pam.lora_batch_callback import LoRABatchCallback
from keras_pam.strategies.strategy import Strategy
from keras_pam.utils import compile_function

OLD_COLUMNS = "olora_old_columns"
NEW_COLUMNS = "olora_new_columns"


def orthogonality_loss(a_factors, old_columns, new_columns):
    """O-LoRA's penalty `sum |A_old^T A_new|` over every adapted layer.

    Each factor's rank axis is the last one; it is flattened to
    `(fan_in, rank)` and split by the column masks.

    Args:
        a_factors: list of tensors. The `A` factors, rank last.
        old_columns: tensor `(rank,)`. 1 on the columns of earlier tasks.
        new_columns: tensor `(rank,)`. 1 on the columns of the current task.

    Returns:
        A scalar.
    """
    old_columns = ops.cast(old_columns, "float32")
    new_columns = ops.cast(new_columns, "float32")
    total = 0.0
    for a in a_factors:
        a = ops.reshape(ops.cast(a, "float32"), (-1, a.shape[-1]))
        gram = ops.matmul(ops.transpose(a * old_columns), a * new_columns)
        total = total + ops.sum(ops.abs(gram))
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
    (so that the JAX backend keeps the write).

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


class OLoRA(Strategy):
    """O-LoRA: each task trains its own LoRA, orthogonal to the earlier ones.

    The learner's LoRA of rank `R` is split into `num_tasks` slices of rank
    `R / num_tasks` along the rank axis; task `t` trains slice `t` (the
    earlier slices frozen, the later ones zero) with the penalty
    `weight * sum |A_old^T A_new|` added to its loss. Concatenating LoRAs
    along the rank is summing them, so the global adapter evaluates the
    sum of every task's LoRA, as O-LoRA's inference does. The scale
    `alpha / R` is shared by all slices.

    Args:
        num_tasks: int. The most tasks the sequence has; the learner's rank
            must be a multiple of it.
        weight: float. Weight of the orthogonality penalty. Defaults to
            `0.5` (O-LoRA's code).

    Example:
    ```python
    # Rank 8 per task for 4 tasks.
    learner = ContinualLearner(causal_lm, rank=32, strategy=OLoRA(4))
    ```
    """

    name = "olora"

    def __init__(self, num_tasks, weight=0.5):
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int):
            raise ValueError(f"`num_tasks` must be an int. Got {num_tasks!r}")
        if num_tasks < 1:
            raise ValueError(f"`num_tasks` must be >= 1. Got {num_tasks}")
        self.num_tasks = num_tasks
        self.weight = weight

    def attach(self, learner):
        super().attach(learner)
        if learner.rank % self.num_tasks:
            raise ValueError(
                f"O-LoRA splits the rank among tasks: the learner's `rank` "
                f"({learner.rank}) must be a multiple of `num_tasks` "
                f"({self.num_tasks})."
            )
        self.task_rank = learner.rank // self.num_tasks

    def _columns(self, index):
        columns = np.arange(self.learner.rank) // self.task_rank
        return columns < index - 1, columns == index - 1

    def start_state(self, task):
        if task.index > self.num_tasks:
            raise ValueError(
                f"O-LoRA was set up for `num_tasks`={self.num_tasks}; task "
                f"{task.index} ({task.name!r}) has no rank slice left."
            )
        old, new = self._columns(task.index)
        state = {}
        for path, value in self.learner.global_state.items():
            is_a = path.endswith("lora_kernel_a")
            fresh = self.learner.initial_state[path] if is_a else 0.0
            state[path] = np.where(
                _rank_mask(value.shape, old, is_a),
                value,
                np.where(_rank_mask(value.shape, new, is_a), fresh, 0.0),
            ).astype(value.dtype)
        return AdapterState(state)

    def callbacks(self, task):
        _, new = self._columns(task.index)
        return [FreezeRankSlices(self.start_state(task), new)]

    def extra_inputs(self, examples, task):
        old, new = self._columns(task.index)
        num = len(examples["prompts"])
        return {
            OLD_COLUMNS: np.tile(old.astype("float32"), (num, 1)),
            NEW_COLUMNS: np.tile(new.astype("float32"), (num, 1)),
        }

    def extra_loss(self, x, y, y_pred, sample_weight):
        variables = lora_variables(self.learner)
        a_factors = [
            v.value for k, v in variables.items() if k.endswith("lora_kernel_a")
        ]
        return self.weight * orthogonality_loss(
            a_factors, x[OLD_COLUMNS][0], x[NEW_COLUMNS][0]
        )

    def get_config(self):
        return {"num_tasks": self.num_tasks, "weight": self.weight}

    @classmethod
    def from_settings(cls, alignment, num_tasks=None, num_experts=8):
        if num_tasks is None:
            raise ValueError(
                "O-LoRA gives each task its own rank slice: pass `num_tasks` "
                "(the length of the sequence)."
            )
        return cls(num_tasks)
