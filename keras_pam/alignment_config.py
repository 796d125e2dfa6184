"""`AlignmentConfig`: PAM's sign-alignment settings, with their defaults."""

import dataclasses
import warnings

from keras_pam.training_settings import PAPER

REINIT_MODES = ("global", "zero")
SCOPES = ("tensor", "global")
# `ContinualLearner`'s names for the fields it takes as arguments: the
# same names.
LEARNER_ARGUMENTS = {
    "p": "p",
    "align_every": "align_every",
    "reinit": "reinit",
    "scope": "scope",
    "align_first_task": "align_first_task",
    "reset_moments": "reset_moments",
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
        p: float. Fraction of important global entries, in (0, 1].
            Defaults to `0.5`, the paper's alignment percentage (its
            App. A; `keras_pam.PAPER.reasons["p"]`).
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

    Example:
    ```python
    config = AlignmentConfig(p=0.3, align_every=20)
    PAM(config)
    config.replace(p=0.7).p  # 0.7
    ```
    """

    p: float
    align_every: int
    reinit: str
    scope: str
    align_first_task: bool
    reset_moments: bool

    def __init__(
        self,
        p=PAPER.p,
        align_every=PAPER.align_every,
        reinit="global",
        scope="tensor",
        align_first_task=True,
        reset_moments=False,
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
        )
        for name, value in settings.items():
            object.__setattr__(self, name, value)
        check_p(self.p)
        check_every(self.align_every)
        check_choice("reinit", self.reinit, REINIT_MODES)
        check_choice("scope", self.scope, SCOPES)

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
