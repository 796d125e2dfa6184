"""The `Strategy` base class: the hooks a continual-learning method sets."""

import dataclasses

ALL_METRICS = ("acc", "bwt", "fwt", "a_t", "a_m")


@dataclasses.dataclass
class TaskContext:
    """What a strategy is told about the task being learned.

    Args:
        name: str. The task's name.
        index: int. Its position in the sequence, from 1.
        examples: dict. Its training split (numpy arrays).
    """

    name: str
    index: int
    examples: dict


class Strategy:
    """A continual-learning method, as hooks around `learn_task`.

    `ContinualLearner.learn_task` runs: `training_data` -> `start_state`
    (assigned to the model) -> `fit` with `callbacks` and `extra_loss` ->
    the temporary adapter -> `merge` (the new global adapter) ->
    `end_task` -> one evaluation per registered task with
    `evaluation_state`. The base class is sequential fine-tuning: start from
    the global adapter, train it, keep the result. A new method is a new
    subclass that overrides the hooks it changes; the learner never changes.

    Strategies read the learner they are attached to (`self.learner`): its
    `global_state`, `initial_state` (the adapter before any task), the
    alignment settings, and its model for teacher predictions.

    Attributes:
        name: str. The name the registry knows it by.
        reported_metrics: tuple of str. The metrics that make sense for the
            method; `evaluate_all` reports only these.
        trains: bool. Whether `learn_task` trains at all.
    """

    name = "finetune"
    reported_metrics = ("acc", "bwt", "fwt", "a_t")
    trains = True

    def attach(self, learner):
        """Called once by the learner that uses this strategy."""
        self.learner = learner

    def training_data(self, task):
        """The examples to train on (data mixing); defaults to the task's."""
        return task.examples

    def extra_inputs(self, examples, task):
        """Per-example arrays added to the model inputs (for `extra_loss`)."""
        return {}

    def start_state(self, task):
        """The adapter training starts from: a clone of the global one."""
        return self.learner.global_state

    def callbacks(self, task):
        """Callbacks added to `fit` before the user's."""
        return []

    def extra_loss(self, x, y, y_pred, sample_weight):
        """A loss added to the task loss inside the train step, or `None`.

        It runs inside the compiled train step: use `keras.ops` only.
        """
        return None

    def merge(self, temporary, task):
        """The new global adapter from the trained temporary one.

        The learner keeps the returned numpy arrays as they are (no copy),
        so a strategy must not change them in place afterwards.
        """
        return temporary

    def end_task(self, temporary, task):
        """Update per-task state after the merge (buffers, task vectors)."""

    def evaluation_state(self, eval_task_name):
        """The adapter to evaluate a task with; `None` means the global."""
        return None

    def get_state(self):
        """What the method keeps between tasks, for checkpoints: a tree of
        dicts, lists, numbers, str, numpy arrays, `AdapterState`s and numpy
        `Generator`s."""
        return {}

    def set_state(self, state):
        """Restore what `get_state` returned (after `attach`)."""

    def get_config(self):
        return {}


class StrategyWrapper(Strategy):
    """A strategy that adds behaviour to another one (`er+pam`, `lwf+pam`).

    Every hook is delegated to `inner`; a subclass overrides the hooks it
    extends and calls the inner one.

    Args:
        inner: `Strategy`. The strategy it extends.
    """

    def __init__(self, inner):
        self.inner = inner

    @property
    def reported_metrics(self):
        return self.inner.reported_metrics

    @property
    def trains(self):
        return self.inner.trains

    def attach(self, learner):
        super().attach(learner)
        self.inner.attach(learner)

    def training_data(self, task):
        return self.inner.training_data(task)

    def extra_inputs(self, examples, task):
        return self.inner.extra_inputs(examples, task)

    def start_state(self, task):
        return self.inner.start_state(task)

    def callbacks(self, task):
        return self.inner.callbacks(task)

    def extra_loss(self, x, y, y_pred, sample_weight):
        return self.inner.extra_loss(x, y, y_pred, sample_weight)

    def merge(self, temporary, task):
        return self.inner.merge(temporary, task)

    def end_task(self, temporary, task):
        self.inner.end_task(temporary, task)

    def evaluation_state(self, eval_task_name):
        return self.inner.evaluation_state(eval_task_name)

    def get_state(self):
        return {"inner": self.inner.get_state()}

    def set_state(self, state):
        self.inner.set_state(state["inner"])
