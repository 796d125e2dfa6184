"""`TaskRecipe`: how one task is trained."""

import dataclasses
import fractions
import math

SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TaskRecipe:
    """How `ContinualLearner.learn_task` trains one task.

    The paper trains each task with PaliGemma's transfer recipe for it
    (its Table 4, `keras_pam.datasets.hyperparameters(name).recipe()`).
    The settings that Table 4 does not list follow PaliGemma's transfer
    configurations in big_vision: a cosine schedule with a linear warmup
    over the first 5 % of the updates, and decoupled weight decay.

    `batch_size` is the batch of one optimizer update. A device that
    cannot hold it splits it into `gradient_accumulation_steps`
    micro-batches (Keras's gradient accumulation): the updates, the
    schedule and PAM's alignment interval all count optimizer updates,
    so the run is the paper's whatever the device.

    Args:
        epochs: int. Training epochs. Defaults to `1`.
        batch_size: int. Examples per optimizer update. Defaults to `8`.
        learning_rate: float. The peak learning rate. Defaults to `None`:
            the learning rate the learner was compiled with.
        schedule: str. `"constant"` (the peak throughout) or `"cosine"`
            (linear warmup from 0 over `warmup_fraction` of the updates,
            then a cosine decay to 0, as big_vision's
            `create_learning_rate_schedule`). Defaults to `"constant"`.
        warmup_fraction: float. Of the updates, in [0, 1), spent warming
            up under `"cosine"`. Defaults to `0.05`.
        weight_decay: float. Decoupled weight decay as big_vision and the
            paper's Table 4 count it: every update shrinks each LoRA
            factor by `weight_decay` times the schedule's factor (not
            times the learning rate). Defaults to `None`: the compiled
            optimizer's own weight decay, unchanged.
        label_smoothing: float. In [0, 1): the token targets are
            `(1 - label_smoothing) * one_hot + label_smoothing / vocab`
            (optax's `smooth_labels`). Needs the learner's default loss.
            Defaults to `0.0`.
        gradient_accumulation_steps: int. Micro-batches per update; must
            divide `batch_size`. Defaults to `1`.

    Example:

    ```python
    from keras_pam import TaskRecipe

    recipe = TaskRecipe(
        epochs=3,
        batch_size=256,
        learning_rate=5e-4,
        schedule="cosine",
        label_smoothing=0.2,
        gradient_accumulation_steps=8,
    )
    assert recipe.micro_batch_size == 32
    assert recipe.num_updates(num_examples=1000) == 12
    ```
    """

    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = None
    schedule: str = "constant"
    warmup_fraction: float = 0.05
    weight_decay: float = None
    label_smoothing: float = 0.0
    gradient_accumulation_steps: int = 1

    def __post_init__(self):
        for name in ("epochs", "batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if not is_int or value < 1:
                raise ValueError(
                    f"`{name}` must be an int >= 1. Got {value!r}."
                )
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"`gradient_accumulation_steps` "
                f"({self.gradient_accumulation_steps}) must divide "
                f"`batch_size` ({self.batch_size}): an update is that many "
                "equal micro-batches."
            )
        if self.learning_rate is not None and not (
            _is_number(self.learning_rate) and self.learning_rate > 0
        ):
            raise ValueError(
                "`learning_rate` must be a number > 0 or None. Got "
                f"{self.learning_rate!r}."
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"`schedule` must be one of {SCHEDULES}. Got {self.schedule!r}."
            )
        if not (
            _is_number(self.warmup_fraction) and 0 <= self.warmup_fraction < 1
        ):
            raise ValueError(
                "`warmup_fraction` must be in [0, 1). Got "
                f"{self.warmup_fraction!r}."
            )
        if self.weight_decay is not None and not (
            _is_number(self.weight_decay) and self.weight_decay >= 0
        ):
            raise ValueError(
                "`weight_decay` must be a number >= 0 or None. Got "
                f"{self.weight_decay!r}."
            )
        if not (
            _is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1
        ):
            raise ValueError(
                "`label_smoothing` must be in [0, 1). Got "
                f"{self.label_smoothing!r}."
            )

    @property
    def micro_batch_size(self):
        """The examples of one micro-batch (one train step)."""
        return self.batch_size // self.gradient_accumulation_steps

    def steps_per_epoch(self, num_examples):
        """Train steps (micro-batches) of one epoch over `num_examples`."""
        return -(-num_examples // self.micro_batch_size)

    def num_updates(self, num_examples):
        """Optimizer updates of the whole task on `num_examples`.

        Micro-batches left over at the end of an epoch join the next
        epoch's first update (Keras accumulates across epochs); those left
        at the end of the task make no update.
        """
        steps = self.epochs * self.steps_per_epoch(num_examples)
        return steps // self.gradient_accumulation_steps

    def warmup_updates(self, num_updates):
        """Warmup updates of a task of `num_updates` (big_vision's
        `int(warmup_percent * total_steps)`)."""
        if self.schedule != "cosine":
            return 0
        return int(self.warmup_fraction * num_updates)

    def replace(self, **changes):
        """A copy with `changes` (checked as in the constructor)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The recipe as a dict of plain values (for JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The recipe of `to_dict`'s dict."""
        return cls(**values)

    @classmethod
    def joint(cls, recipes, num_examples):
        """The recipe of one training on the union of several tasks.

        A joint training (the multitask baseline) runs once on the union
        of the tasks' training sets, which has no recipe of its own; the
        last task's would give its settings to every task. This recipe
        takes each setting from all the tasks' recipes instead, task `t`
        weighted by its share of the union, `w_t = n_t / sum_j n_j` with
        `n_t` its training examples. The union is shuffled, so each
        update draws task `t`'s examples with probability `w_t`: `w_t` is
        the share task `t` has in every update of the joint training,
        and so the say it gets in the settings that act on every update.

        - `epochs`: `sum_t w_t epochs_t`, rounded (at least 1). An epoch
          of the union visits every example once, so the joint training
          visits `sum_t epochs_t n_t` examples, as many as the tasks'
          own trainings together: it costs what they cost.
        - `batch_size`: `sum_t w_t batch_size_t`, rounded to the nearest
          multiple (at least one) of the greatest common divisor of the
          tasks' batch sizes, so that every split of the batch that
          divided each task's (micro-batches, devices, processes) still
          divides it.
        - `learning_rate`, `warmup_fraction`, `weight_decay` and
          `label_smoothing`: `sum_t w_t value_t`; a value every recipe
          shares is kept as it is.
        - `schedule` and `gradient_accumulation_steps` are not averaged
          (a schedule is a kind, the accumulation the device's): they
          must be the same in every recipe. So must it be whether
          `learning_rate` and `weight_decay` are given: `None` (the
          compiled optimizer's) has no value to average.

        Args:
            recipes: list of `TaskRecipe`. The tasks' own recipes.
            num_examples: list of int. The tasks' training examples, in
                the order of `recipes`.

        Returns:
            A `TaskRecipe`. Recipes that are all equal give that recipe.

        Example:

        ```python
        from keras_pam import TaskRecipe

        joint = TaskRecipe.joint(
            [
                TaskRecipe(epochs=20, batch_size=128),
                TaskRecipe(epochs=2, batch_size=256, label_smoothing=0.2),
            ],
            num_examples=[300, 100],
        )
        # 20 x 3/4 + 2 x 1/4 = 15.5 epochs; batch 160, to a multiple of 128.
        assert (joint.epochs, joint.batch_size) == (16, 128)
        assert joint.label_smoothing == 0.05
        ```
        """
        recipes = list(recipes)
        num_examples = list(num_examples)
        if not recipes or not all(isinstance(r, cls) for r in recipes):
            raise ValueError(
                "`recipes` must be a non-empty list of `TaskRecipe`s. Got "
                f"{recipes!r}."
            )
        if len(num_examples) != len(recipes) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1
            for n in num_examples
        ):
            raise ValueError(
                "`num_examples` must hold an int >= 1 per recipe "
                f"({len(recipes)}). Got {num_examples!r}."
            )
        for name in ("schedule", "gradient_accumulation_steps"):
            values = {getattr(r, name) for r in recipes}
            if len(values) > 1:
                raise ValueError(
                    f"A joint recipe needs one `{name}` in every recipe. "
                    f"Got {sorted(values, key=str)}."
                )
        for name in ("learning_rate", "weight_decay"):
            given = {getattr(r, name) is not None for r in recipes}
            if len(given) > 1:
                raise ValueError(
                    f"A joint recipe needs `{name}` in every recipe or in "
                    "none: `None` (the compiled optimizer's) has no value "
                    "to average."
                )
        total = sum(num_examples)

        def mean(name):
            values = [getattr(r, name) for r in recipes]
            if all(v == values[0] for v in values):
                return values[0]
            weighted = math.fsum(n * v for n, v in zip(num_examples, values))
            return weighted / total

        def rational_mean(name):
            weighted = sum(
                n * getattr(r, name) for n, r in zip(num_examples, recipes)
            )
            return fractions.Fraction(weighted, total)

        unit = math.gcd(*(r.batch_size for r in recipes))
        return recipes[0].replace(
            epochs=max(1, _round_half_up(rational_mean("epochs"))),
            batch_size=unit
            * max(1, _round_half_up(rational_mean("batch_size") / unit)),
            learning_rate=mean("learning_rate"),
            warmup_fraction=mean("warmup_fraction"),
            weight_decay=mean("weight_decay"),
            label_smoothing=mean("label_smoothing"),
        )


def _round_half_up(value):
    """The int nearest a `Fraction`, halves up (`round` would go to even)."""
    return math.floor(value + fractions.Fraction(1, 2))


def _is_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
