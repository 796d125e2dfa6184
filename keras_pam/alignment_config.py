"""`AlignmentConfig`: PAM's sign-alignment settings, with their defaults."""

import dataclasses

REINIT_MODES = ("global", "zero")
SCOPES = ("tensor", "global")
# `ContinualLearner`'s names for the fields it takes as arguments.
LEARNER_ARGUMENTS = {
    "p": "p",
    "align_every": "every",
    "reinit": "reinit",
    "scope": "scope",
    "align_first_task": "align_first_task",
    "reset_moments": "reset_moments",
}


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


def check_every(every):
    """Refuse an alignment interval that is not an int >= 1."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(
            f"`every` must be an int >= 1. Received: every={every!r}"
        )


@dataclasses.dataclass(frozen=True)
class AlignmentConfig:
    """The settings of PAM's sign alignment (PAM_SPEC, Algorithm 1).

    One frozen value that `PAM`, `PostAlign`, `get_strategy`, the
    `ContinualLearner` shim and the command line share, so the defaults
    are written here only. It is validated when made.

    Args:
        p: float. Fraction of important global entries, in (0, 1].
            Defaults to `0.5` (the paper's).
        every: int. Align after every this many training batches. Defaults
            to `100`.
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
    config = AlignmentConfig(p=0.3, every=20)
    PAM(config)
    config.replace(p=0.7).p  # 0.7
    ```
    """

    p: float = 0.5
    every: int = 100
    reinit: str = "global"
    scope: str = "tensor"
    align_first_task: bool = True
    reset_moments: bool = False

    def __post_init__(self):
        check_p(self.p)
        check_every(self.every)
        check_choice("reinit", self.reinit, REINIT_MODES)
        check_choice("scope", self.scope, SCOPES)

    @classmethod
    def make(cls, config=None, **settings):
        """`config` (or the defaults) with `settings` replaced; a setting
        that is not a field is refused by name."""
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
