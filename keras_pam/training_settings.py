"""Named sets of training settings: the paper's, and the testbed's.

A `TrainingSettings` is a settings preset: the LoRA rank, PAM's `p` and
`align_every`, Adam's learning rate, and a task's epochs and batch size,
each with the reason for its value. KerasHub presets name model weights;
these name the settings a model is taught with.

- `PAPER` holds the paper's settings for a real PaliGemma (its App. A).
  They are the library's defaults: `ContinualLearner`'s `rank`,
  `AlignmentConfig`'s `p` and `align_every`, and the optimizer `compile`
  makes read them from here.
- `TESTBED` holds the settings of the tiny pretrained base that ships
  with keras_pam: `keras-pam run`'s defaults, the quickstart, and the
  notebooks' smoke runs read them from here.

Nothing else in the package writes these numbers down.
"""

import dataclasses
import types

# The fields `ContinualLearner` takes as keyword arguments.
LEARNER_FIELDS = ("rank", "p", "align_every")


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """A named set of training settings, with the reason for each.

    Pass it to the learner, whose own defaults are `PAPER`'s:
    `learner_kwargs()` gives the constructor's `rank`, `p` and
    `align_every`, and `optimizer()` the Adam optimizer of its learning
    rate for `compile`; `epochs` and `batch_size` go to `learn_task`.
    `replace` makes a variant (`TESTBED.replace(rank=4)`), and
    `reasons[name]` says why a setting has its value.

    Args:
        name: str. The preset's name, e.g. `"testbed"`.
        rank: int. The LoRA rank.
        p: float. PAM's fraction of important global entries, in (0, 1].
        align_every: int. PAM aligns after every this many optimizer
            updates.
        learning_rate: float. Adam's learning rate.
        epochs: int. Epochs per task. `None`: each task's own (the
            paper's Table 4, `keras_pam.datasets.hyperparameters`).
            Defaults to `None`.
        batch_size: int. Examples per optimizer update. `None`: each
            task's own, as for `epochs`. Defaults to `None`.
        reasons: dict. Setting name to why it has its value. Defaults to
            `{}`.

    Example:
    ```python
    settings = keras_pam.TESTBED
    learner = keras_pam.ContinualLearner.from_preset(
        keras_pam.models.shipped_base_preset(), **settings.learner_kwargs()
    )
    learner.compile(optimizer=settings.optimizer())
    learner.learn_task(
        train, name="color", epochs=settings.epochs,
        batch_size=settings.batch_size,
    )
    print(settings.reasons["align_every"])
    ```
    """

    name: str
    rank: int
    p: float
    align_every: int
    learning_rate: float
    epochs: int = None
    batch_size: int = None
    reasons: types.MappingProxyType = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self):
        # Read-only, as the rest of the preset.
        object.__setattr__(
            self, "reasons", types.MappingProxyType(dict(self.reasons))
        )

    def learner_kwargs(self):
        """`ContinualLearner`'s `rank`, `p` and `align_every`, as a dict.

        Returns:
            A dict, e.g. `{"rank": 8, "p": 0.5, "align_every": 20}`.
        """
        return {name: getattr(self, name) for name in LEARNER_FIELDS}

    def optimizer(self):
        """A new `keras.optimizers.Adam` at this preset's learning rate."""
        import keras

        return keras.optimizers.Adam(learning_rate=self.learning_rate)

    def alignment(self):
        """PAM's settings: a `keras_pam.AlignmentConfig` of this preset's
        `p` and `align_every` (the other fields its defaults)."""
        from keras_pam.alignment_config import AlignmentConfig

        return AlignmentConfig(p=self.p, align_every=self.align_every)

    def replace(self, **changes):
        """A copy with `changes` (the reasons kept)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The settings as a dict, without the reasons."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "reasons"
        }


PAPER = TrainingSettings(
    name="paper",
    rank=32,
    p=0.5,
    align_every=100,
    learning_rate=5e-4,
    reasons={
        "rank": (
            "The paper's LoRA rank for PAM and every baseline (App. A); "
            "its Fig. 10 shows PAM keeps its accuracy at lower ranks."
        ),
        "p": (
            "The paper's alignment percentage: the top 50 % of each "
            "global tensor's magnitudes are protected, in all its "
            "experiments (App. A)."
        ),
        "align_every": (
            "The paper aligns every 100 steps (App. A). A CoIN task on "
            "PaliGemma-3B is thousands of optimizer updates (1 to 10 hours "
            "on 64 TPUs), so that is many alignments per task, each a small "
            "cost (+0.4 % of `fit` time, docs/methods.md)."
        ),
        "learning_rate": (
            "The paper's, 5e-4 for every task: it keeps PaliGemma's "
            "transfer recipes (Table 4) but for the learning rate, chosen "
            "for LoRA training (App. A). The optimizer is Adam, as in "
            "PaliGemma's transfer configurations in big_vision."
        ),
        "epochs": (
            "Each task's own, from the paper's Table 4: "
            "`keras_pam.datasets.hyperparameters(name).recipe()`."
        ),
        "batch_size": (
            "Each task's own, from the paper's Table 4 (see `epochs`)."
        ),
    },
)

TESTBED = TrainingSettings(
    name="testbed",
    rank=8,
    p=PAPER.p,
    align_every=20,
    learning_rate=2e-3,
    epochs=3,
    batch_size=16,
    reasons={
        "rank": (
            "The tiny base's hidden width is 96: rank 32 would be a third "
            "of it, not a low-rank update; rank 8 stays low rank, and the "
            "testbed's measurements (docs/testbed.md) were made at it."
        ),
        "p": (
            "The paper's 0.5, kept so that the testbed compares PAM to its "
            "baselines at the paper's setting."
        ),
        "align_every": (
            "A testbed task is short, 150 updates (800 examples x 3 "
            "epochs of 16 in `keras-pam run`): at the paper's 100 it "
            "would align once per task, at 20 seven times, as a long "
            "task of the paper is aligned many times."
        ),
        "learning_rate": (
            "Tasks of a few hundred updates on a tiny base, against the "
            "paper's thousands on a 3B model: Adam at 2e-3 learns each "
            "learnable task in that many updates, and the testbed's "
            "measurements (docs/testbed.md) were made at it."
        ),
        "epochs": (
            "3 epochs of 800 examples learn every generated task of the "
            "default sequence to 81-100 % but `choice` (README, the main "
            "job) and keep `keras-pam run`, 18 runs of six tasks, within "
            "15 minutes on two CPU cores."
        ),
        "batch_size": (
            "16: small batches give a short task more updates, on a CPU."
        ),
    },
)
