"""The `Strategy` base class: the hooks a continual-learning method sets."""

import dataclasses

from keras_pam.merging import alignment_functions
from keras_pam.merging.training_settings import DEFAULT_ALIGNMENT

ALL_METRICS = ("acc", "bwt", "fwt", "a_t", "a_m")


@dataclasses.dataclass
class TaskContext:
    """What a strategy is told about the task being learned.

    Args:
        name: str. The task's name.
        index: int. Its position in the sequence, from 1.
        examples: dict or `StreamingSplit`. Its training split: numpy
            arrays, or a stream (`keras_pam.streaming_split`) read batch
            by batch, which has no `len` or indexing (`data.num_examples`,
            `StreamingSplit.batches`).
        previous_global: `AdapterState`. The global adapter before this
            task (`G_{t-1}`), whatever a hook changes. Defaults to `None`.
        initial: `AdapterState`. The adapter before any task. Defaults to
            `None`.
    """

    name: str
    index: int
    examples: dict
    previous_global: object = None
    initial: object = None


class Strategy:
    """A continual-learning method, as hooks around `learn_task`.

    `ContinualLearner.learn_task` runs: `training_data` -> `start_state`
    (assigned to the model) -> `fit` with `callbacks`, `extra_loss` and
    the `build_in_step_update` layer inside the train step -> the
    temporary adapter -> `merge` (the new global adapter) ->
    `task_diagnostics` (for the task report) -> `end_task` -> one
    evaluation per registered task with `evaluation_state`. The base class
    is sequential fine-tuning: start from the global adapter, train it,
    keep the result. A new method is a new subclass that overrides the
    hooks it changes; the learner never changes.

    Strategies read the learner they are attached to (`self.learner`): its
    `global_state`, `initial_state` (the adapter before any task),
    `in_step_update` (the layer their `build_in_step_update` made) and its
    model for teacher predictions.

    Attributes:
        name: str. The name the registry knows it by.
        reported_metrics: tuple of str. The metrics that make sense for the
            method; `evaluate_all` reports only these.
        trains: bool. Whether `learn_task` trains at all.
        adds_weights: bool. Whether `attach` adds weights to the model
            (MoELoRA's routers): such a learner cannot be `reset` for
            another run.
        method_settings: tuple of str. The settings of `get_strategy`
            that only this method takes (`"l2_weight"` of `L2Pull`): its
            `from_settings` receives those given as keywords.
    """

    name = "finetune"
    reported_metrics = ("acc", "bwt", "fwt", "a_t")
    trains = True
    adds_weights = False
    method_settings = ()

    def attach(self, learner):
        """Called once by the learner that uses this strategy."""
        self.learner = learner

    def chain(self):
        """This strategy and the strategies it wraps, outermost first."""
        return [self]

    def training_data(self, task):
        """The examples to train on (data mixing); defaults to the task's.

        A dict of arrays or a `StreamingSplit` (mix a stream with
        `StreamingSplit.union`)."""
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

    def build_in_step_update(self):
        """A `keras_pam.InStepUpdate` for the train step to run after every
        optimizer step, or `None`.

        The learner calls it when it attaches the strategy, unless it
        already holds one built for the same `train_step_key` (then that
        one is reused, `reset`, and the step is not traced again); it is
        then `self.learner.in_step_update`.
        """
        return None

    def task_diagnostics(self, temporary, task):
        """What the task report says of the method's work on this task.

        Called after `merge` and before `end_task`. Keys that are fields
        of `keras_pam.TaskReport` (`num_reinitialised`,
        `reinitialised_counts`, `misaligned_fraction_all`,
        `misaligned_fraction_important`) fill them; other keys go to its
        `diagnostics` dict.

        The base class reports how far the trained adapter's signs oppose
        `task.previous_global` (`alignment.misalignment`): over all
        entries (the paper's count) and over the important ones. A method
        without alignment settings of its own (fine-tune, average, TIES,
        ...) ranks importance with the default `AlignmentConfig`'s `p` and
        `scope` (`0.5`, `"tensor"`, the paper's), so that every method is
        measured against the same entries; `PAM` and `PostAlign` use their
        own.
        """
        return alignment_functions.misalignment(
            temporary,
            task.previous_global,
            DEFAULT_ALIGNMENT.p,
            DEFAULT_ALIGNMENT.scope,
        )

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
        """The constructor's arguments as JSON values, for `from_config`
        (what the method learned is `get_state`'s)."""
        return {}

    @classmethod
    def from_config(cls, config):
        """The strategy that `get_config` described."""
        return cls(**config)

    @classmethod
    def from_settings(cls, alignment, num_tasks=None, num_experts=8):
        """The strategy its registry name builds, from a study's settings.

        `keras_pam.strategies.get_strategy` calls it. The base class takes
        none of the settings; a method that does overrides it. A method
        with `method_settings` also takes those of them that were given,
        as keywords.

        Args:
            alignment: `keras_pam.AlignmentConfig`. PAM's settings.
            num_tasks: int. The sequence's length, or `None`.
            num_experts: int. The number of LoRA experts.
        """
        return cls()


# The hooks a `StrategyWrapper` hands to its inner strategy unchanged
# unless it overrides them. A test checks that no hook is missing.
FORWARDED_HOOKS = (
    "training_data",
    "extra_inputs",
    "start_state",
    "callbacks",
    "extra_loss",
    "build_in_step_update",
    "merge",
    "task_diagnostics",
    "end_task",
    "evaluation_state",
)
FORWARDED_ATTRIBUTES = ("reported_metrics", "trains", "adds_weights")


def _forward_hook(name):
    def hook(self, *args, **kwargs):
        return getattr(self.inner, name)(*args, **kwargs)

    hook.__name__ = name
    hook.__doc__ = getattr(Strategy, name).__doc__
    return hook


def _forward_attribute(name):
    return property(lambda self: getattr(self.inner, name))


class StrategyWrapper(Strategy):
    """A strategy that adds behaviour to another one (`er+pam`, `lwf+pam`).

    Every hook (`FORWARDED_HOOKS`) and attribute
    (`FORWARDED_ATTRIBUTES`) is delegated to `inner`; a subclass overrides
    the hooks it extends and calls the inner one. A subclass with a
    `prefix` is named `"<prefix>+<inner name>"`, or `prefix` alone around
    its `default_inner` method; the registry parses such names.

    Args:
        inner: `Strategy`. The strategy it extends.
    """

    prefix = None
    default_inner = "finetune"

    def __init__(self, inner):
        self.inner = inner
        if self.prefix is not None:
            self.name = (
                self.prefix
                if inner.name == self.default_inner
                else f"{self.prefix}+{inner.name}"
            )

    for _name in FORWARDED_HOOKS:
        locals()[_name] = _forward_hook(_name)
    for _name in FORWARDED_ATTRIBUTES:
        locals()[_name] = _forward_attribute(_name)
    del _name

    def attach(self, learner):
        super().attach(learner)
        self.inner.attach(learner)

    def chain(self):
        return [self, *self.inner.chain()]

    def get_state(self):
        return {"inner": self.inner.get_state()}

    def set_state(self, state):
        self.inner.set_state(state["inner"])

    def get_config(self):
        inner = {"name": self.inner.name, "config": self.inner.get_config()}
        return {"inner": inner}

    @classmethod
    def from_config(cls, config):
        """The wrapper `get_config` described, around `config["inner"]`:
        the inner `Strategy` itself, which `strategy_from_config`
        rebuilds from its saved entry first."""
        config = dict(config)
        inner = config.pop("inner")
        if isinstance(inner, dict):
            raise TypeError(
                f"`{cls.__name__}.from_config` takes the inner strategy "
                "built: rebuild a saved entry with "
                "`keras_pam.strategies.strategy_from_config`."
            )
        return cls(inner, **config)
