"""`TaskLearningRate`: a learning-rate schedule that each task re-sets."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_pam")
class TaskLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate of a task's recipe, re-set for every task.

    Its settings (peak, warmup and total updates, cosine or constant,
    micro-batches per update) are variables of the optimizer, so every
    task sets them by assignment and the compiled train step is never
    traced again. Keras passes the schedule the optimizer's micro-batch
    count; the schedule counts optimizer updates, as big_vision's does:

    - `"constant"`: `peak`;
    - `"cosine"`: `peak * min(1, u / warmup)` during the warmup, then
      `peak * (1 + cos(pi * progress)) / 2`, `progress` going from 0 to
      1 over the remaining updates (`u` the update, from 0).

    `attach(optimizer)` creates the variables in the optimizer and makes
    the schedule its learning rate; the learner does it the first time a
    `keras_pam.TaskRecipe` needs it.

    Args:
        base_learning_rate: float. The learning rate the optimizer had
            before: a task without a recipe trains at it, constant.

    Example:

    ```python
    import keras
    from keras_pam.task_learning_rate import TaskLearningRate

    optimizer = keras.optimizers.Adam(1e-3)
    schedule = TaskLearningRate.attach(optimizer)
    schedule.set(peak=5e-4, num_updates=100, warmup_updates=5, cosine=True)
    print(float(schedule(0)), float(schedule(5)), float(schedule(100)))
    ```
    """

    def __init__(self, base_learning_rate):
        self.base_learning_rate = float(base_learning_rate)
        self._settings = None

    @classmethod
    def attach(cls, optimizer):
        """Make a `TaskLearningRate` the optimizer's learning rate.

        An optimizer whose learning rate is a float or a variable gets a
        schedule at that rate (constant); one whose schedule is a
        `TaskLearningRate` (e.g. deserialised) gets its variables.
        Returns the schedule.

        Raises:
            ValueError: the optimizer has another schedule.
        """
        current = optimizer._learning_rate
        if not cls.fits(optimizer):
            raise ValueError(
                "The optimizer's learning rate is a schedule of its own "
                f"({type(current).__name__}); a task recipe's "
                "`learning_rate` and `schedule` need an optimizer compiled "
                "with a float learning rate."
            )
        if isinstance(current, cls):
            schedule = current
        else:
            schedule = cls(float(ops.convert_to_numpy(current)))
        if schedule._settings is None:

            def add(name, value):
                variable = optimizer.add_variable(
                    (), initializer="zeros", dtype="float32", name=name
                )
                variable.assign(value)
                return variable

            schedule._settings = {
                "peak": add(
                    "task_peak_learning_rate", schedule.base_learning_rate
                ),
                "num_updates": add("task_num_updates", 1.0),
                "warmup_updates": add("task_warmup_updates", 0.0),
                "cosine": add("task_cosine", 0.0),
                "accumulation": add("task_accumulation", 1.0),
            }
            optimizer._learning_rate = schedule
        return schedule

    @classmethod
    def fits(cls, optimizer):
        """Whether `attach` can make the optimizer's learning rate a
        `TaskLearningRate`: it is a float (a variable) or one already."""
        return isinstance(optimizer._learning_rate, (keras.Variable, cls))

    @property
    def variables(self):
        """Its variables (in the optimizer), or `()` before `attach`."""
        return tuple((self._settings or {}).values())

    def set(
        self,
        peak,
        num_updates=1,
        warmup_updates=0,
        cosine=False,
        accumulation=1,
    ):
        """Set the schedule of the next task.

        Args:
            peak: float. The peak learning rate.
            num_updates: int. The task's optimizer updates. Defaults to `1`.
            warmup_updates: int. Its warmup updates. Defaults to `0`.
            cosine: bool. Cosine decay (else constant). Defaults to `False`.
            accumulation: int. Micro-batches per update. Defaults to `1`.
        """
        values = {
            "peak": peak,
            "num_updates": max(1, num_updates),
            "warmup_updates": warmup_updates,
            "cosine": 1.0 if cosine else 0.0,
            "accumulation": accumulation,
        }
        for name, value in values.items():
            self._settings[name].assign(float(value))

    def __call__(self, step):
        settings = self._settings
        if settings is None:
            return ops.convert_to_tensor(self.base_learning_rate, "float32")
        peak = settings["peak"].value
        total = settings["num_updates"].value
        warmup = settings["warmup_updates"].value
        update = ops.floor(
            ops.cast(step, "float32") / settings["accumulation"].value
        )
        warm = ops.where(
            warmup > 0, ops.minimum(1.0, update / ops.maximum(warmup, 1.0)), 1.0
        )
        progress = ops.clip(
            (update - warmup) / ops.maximum(total - warmup, 1.0), 0.0, 1.0
        )
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress)) * warm
        return peak * ops.where(settings["cosine"].value > 0, cosine, 1.0)

    def get_config(self):
        return {"base_learning_rate": self.base_learning_rate}
