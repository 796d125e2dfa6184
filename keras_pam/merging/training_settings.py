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

`AlignmentConfig` holds PAM's sign-alignment settings, with their
defaults from `PAPER`. The two live in one module because each reads
the other: the config's defaults are `PAPER`'s, and a preset's
`alignment()` is a config.
"""

import dataclasses
import types
import warnings

from keras_pam.merging.adapter_parts import canonical_parts

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


REINIT_MODES = ("global", "zero")
SCOPES = ("tensor", "global")
# How PAM's `p` is set per task: the configured one, or a rule of
# `keras_pam.merging.p_rules`.
P_RULES = ("fixed", "conflict", "direction")
# `ContinualLearner`'s names for the fields it takes as arguments: the
# same names.
LEARNER_ARGUMENTS = {
    "p": "p",
    "align_every": "align_every",
    "reinit": "reinit",
    "scope": "scope",
    "align_first_task": "align_first_task",
    "reset_moments": "reset_moments",
    "align_parts": "parts",
}
# Old names of alignment settings: `every` is `align_every` since 0.1.0.
RENAMED = {"every": "align_every"}


def warn_renamed(old, where, stacklevel=3):
    """Warn that the keyword `old` of `where` is deprecated."""
    warnings.warn(
        f"`{where}`: `{old}` is deprecated; use `{RENAMED[old]}`, the "
        "name `ContinualLearner`, `AlignmentConfig` and `keras-pam run "
        "--align-every` share.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_settings(settings, where, stacklevel=4):
    """`settings` with each deprecated name replaced by its new one.

    A deprecated name warns (`DeprecationWarning`); given with its new
    name, it is refused.

    Args:
        settings: dict. Alignment settings, by name.
        where: str. The function they were given to, for the messages.
        stacklevel: int. Passed to `warnings.warn`. Defaults to `4` (the
            caller of the function that calls this one).

    Returns:
        A new dict.
    """
    settings = dict(settings)
    for old, new in RENAMED.items():
        if old not in settings:
            continue
        if new in settings:
            raise TypeError(
                f"`{where}` got both `{new}` and its deprecated name "
                f"`{old}`; give `{new}` only."
            )
        warn_renamed(old, where, stacklevel)
        settings[new] = settings.pop(old)
    return settings


def upgrade_recorded(settings):
    """Recorded settings (a run folder's, a preset's) under today's names,
    without a warning: data written before a rename still loads."""
    return {RENAMED.get(key, key): value for key, value in settings.items()}


def check_p(p):
    """Refuse a `p` that is not a number in (0, 1]."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise ValueError(f"`p` must be a number in (0, 1]. Received: {p!r}")
    if not 0 < p <= 1:
        raise ValueError(f"`p` must be in (0, 1]. Received: p={p}")


def check_choice(name, value, choices):
    """Refuse a `value` that is not one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}"
        )


def check_every(align_every):
    """Refuse an alignment interval that is not an int >= 1."""
    value = align_every
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "`align_every` must be an int >= 1. Received: "
            f"align_every={value!r}"
        )


@dataclasses.dataclass(frozen=True, init=False)
class AlignmentConfig:
    """The settings of PAM's sign alignment (PAM_SPEC, Algorithm 1).

    One frozen value that `PAM`, `PostAlign`, `get_strategy`, the
    `ContinualLearner` shim and the command line share, so the defaults
    are written here only: the paper's, from `keras_pam.PAPER` (a real
    PaliGemma). The tiny base that ships with keras_pam is taught with
    `keras_pam.TESTBED.alignment()` (`align_every=20`: its tasks are
    short). It is validated when made.

    Args:
        p: float. Fraction of important global entries, in (0, 1];
            under a `p_rule` other than `"fixed"`, that of a task whose
            measurement is undefined. Defaults to `0.5`, the paper's
            alignment percentage (its App. A;
            `keras_pam.PAPER.reasons["p"]`).
        align_every: int. Align after every this many optimizer updates.
            Defaults to `100`, the paper's interval for its long tasks
            (thousands of updates each; `keras_pam.PAPER.reasons`). Its
            old name `every` is still accepted, with a
            `DeprecationWarning`.
        reinit: str. `"global"` or `"zero"`: what a conflicting entry is
            re-initialised to. Defaults to `"global"`.
        scope: str. `"tensor"` or `"global"`: where the top-`p`
            magnitudes are ranked. Defaults to `"tensor"`.
        align_first_task: bool. Align during the first task too, to the
            random `A` factors of the initial adapter. Defaults to `True`.
        reset_moments: bool. Zero the optimizer moments of re-initialised
            entries. Defaults to `False`.
        p_rule: str. How each task's `p` is set: `"fixed"` uses `p` for
            every task; `"conflict"` and `"direction"` set it once per
            task, at its first alignment, from the interference measured
            then (`keras_pam.merging.p_rules`), in [0.3, 0.9], with `p`
            for a task whose measurement is undefined. Defaults to
            `"fixed"`.
        parts: str. The parts of the model whose LoRA factors are
            aligned: `"all"`, `"vision"` (the image tower), `"text"` (the
            decoder), `"attention"` or `"feedforward"` (those projections
            of both towers), `"early"` or `"late"` (the first or second
            half of each tower's blocks), or a comma-separated union of
            them (`"vision,attention"`; see
            `keras_pam.merging.adapter_parts`). A factor outside them is
            never important, so never re-initialised; with
            `scope="global"` the top `p` is ranked over the chosen parts.
            Kept in `PART_NAMES` order (`"attention,vision"` is
            `"vision,attention"`). Defaults to `"all"`, the paper's.

    Example:
    ```python
    config = AlignmentConfig(p=0.3, align_every=20)
    PAM(config)
    config.replace(p=0.7).p  # 0.7
    AlignmentConfig(p_rule="conflict")  # p per task, from sign conflicts.
    AlignmentConfig(parts="attention,vision").parts  # "vision,attention"
    ```
    """

    p: float
    align_every: int
    reinit: str
    scope: str
    align_first_task: bool
    reset_moments: bool
    p_rule: str
    parts: str

    def __init__(
        self,
        p=PAPER.p,
        align_every=PAPER.align_every,
        reinit="global",
        scope="tensor",
        align_first_task=True,
        reset_moments=False,
        p_rule="fixed",
        parts="all",
        **deprecated,
    ):
        unexpected = sorted(set(deprecated) - set(RENAMED))
        if unexpected:
            raise TypeError(
                "AlignmentConfig() got an unexpected keyword argument "
                f"{unexpected[0]!r}."
            )
        if "every" in deprecated:
            if align_every != PAPER.align_every:
                raise TypeError(
                    "`AlignmentConfig` got both `align_every` and its "
                    "deprecated name `every`; give `align_every` only."
                )
            warn_renamed("every", "AlignmentConfig")
            align_every = deprecated["every"]
        settings = dict(
            p=p,
            align_every=align_every,
            reinit=reinit,
            scope=scope,
            align_first_task=align_first_task,
            reset_moments=reset_moments,
            p_rule=p_rule,
            parts=canonical_parts(parts),
        )
        for name, value in settings.items():
            object.__setattr__(self, name, value)
        check_p(self.p)
        check_every(self.align_every)
        check_choice("reinit", self.reinit, REINIT_MODES)
        check_choice("scope", self.scope, SCOPES)
        check_choice("p_rule", self.p_rule, P_RULES)

    @property
    def every(self):
        """Deprecated: `align_every`."""
        warn_renamed("every", "AlignmentConfig.every", stacklevel=3)
        return self.align_every

    @classmethod
    def make(cls, config=None, **settings):
        """`config` (or the defaults) with `settings` replaced; a setting
        that is not a field is refused by name (a deprecated name, as
        `every`, warns and is renamed)."""
        settings = renamed_settings(settings, "AlignmentConfig.make")
        unknown = sorted(set(settings) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"Unknown alignment settings {unknown}. Choose from "
                f"{list(cls.field_names())}."
            )
        return dataclasses.replace(config or cls(), **settings)

    @classmethod
    def field_names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    def replace(self, **settings):
        """A copy with `settings` changed."""
        settings = renamed_settings(settings, "AlignmentConfig.replace")
        return self.make(self, **settings)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_learner_arguments(cls, **arguments):
        """The config of `ContinualLearner`'s alignment arguments (`p`,
        `align_every`, ...); those not given take the defaults."""
        unknown = sorted(set(arguments) - set(LEARNER_ARGUMENTS))
        if unknown:
            raise TypeError(
                f"Unexpected alignment arguments {unknown}. Choose from "
                f"{list(LEARNER_ARGUMENTS)}."
            )
        return cls(**{LEARNER_ARGUMENTS[k]: v for k, v in arguments.items()})

    def to_learner_arguments(self):
        """The fields under `ContinualLearner`'s argument names."""
        return {k: getattr(self, f) for k, f in LEARNER_ARGUMENTS.items()}


DEFAULT_ALIGNMENT = AlignmentConfig()
