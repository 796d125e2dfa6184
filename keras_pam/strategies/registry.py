"""The strategy registry: names, composed names and saved configs.

A base method is known by its class's `name` (`"pam"`, `"ties"`, ...); a
`StrategyWrapper` with a `prefix` composes with any of them (`"lwf+pam"`,
`"er+average"`), or stands alone around its `default_inner` (`"lwf"` is
`LwF(Finetune())`). A new method is a new file with a `Strategy` subclass
and one entry in `BASE_STRATEGIES` or `WRAPPERS`.
"""

from keras_pam.merging.training_settings import LEARNER_ARGUMENTS
from keras_pam.merging.training_settings import AlignmentConfig
from keras_pam.merging.training_settings import renamed_settings
from keras_pam.strategies.average import Average
from keras_pam.strategies.experience_replay import ExperienceReplay
from keras_pam.strategies.finetune import Finetune
from keras_pam.strategies.ilora import ILoRA
from keras_pam.strategies.independent import Independent
from keras_pam.strategies.l2_pull import L2Pull
from keras_pam.strategies.lwf import LwF
from keras_pam.strategies.magmax import MagMax
from keras_pam.strategies.moelora import MoELoRA
from keras_pam.strategies.multitask import Multitask
from keras_pam.strategies.olora import OLoRA
from keras_pam.strategies.pam import PAM
from keras_pam.strategies.post_align import PostAlign
from keras_pam.strategies.strategy import Strategy
from keras_pam.strategies.tall import TALL
from keras_pam.strategies.tall import TALLTaskID
from keras_pam.strategies.ties import TIES
from keras_pam.strategies.zero_shot import ZeroShot

BASE_STRATEGIES = {
    strategy.name: strategy
    for strategy in (
        ZeroShot,
        Independent,
        Multitask,
        Finetune,
        Average,
        PAM,
        TIES,
        MagMax,
        PostAlign,
        L2Pull,
        ILoRA,
        OLoRA,
        MoELoRA,
    )
}
# `tall-task-id` is not in `STRATEGY_NAMES`: it needs the task's identity
# at test time, which the paper's setting does not give.
WRAPPERS = {
    wrapper.prefix: wrapper
    for wrapper in (TALL, TALLTaskID, LwF, ExperienceReplay)
}
# The methods of the paper's comparison, in the order the CLI lists them;
# `parse_name` takes any other composition too.
STRATEGY_NAMES = (
    "zero-shot",
    "independent",
    "multitask",
    "finetune",
    "average",
    "pam",
    "ties",
    "tall",
    "tall+pam",
    "magmax",
    "post-align",
    "l2-pull",
    "lwf",
    "lwf+pam",
    "er",
    "er+pam",
    "ilora",
    "olora",
    "moelora",
)


def parse_name(name):
    """The classes a strategy name composes.

    Args:
        name: str. A base name (`"pam"`), a wrapper's prefix (`"lwf"`) or
            prefixes joined to a base name by `+` (`"er+tall+pam"`).

    Returns:
        A tuple `(wrappers, base)`: the wrapper classes, outermost first,
        and the base method's class.
    """
    wrappers = []
    rest = name if isinstance(name, str) else ""
    while True:
        head, plus, tail = rest.partition("+")
        if head not in WRAPPERS:
            break
        wrappers.append(WRAPPERS[head])
        rest = tail if plus else WRAPPERS[head].default_inner
    if rest not in BASE_STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}. Choose one of "
            f"{list(STRATEGY_NAMES)}, or compose one of {list(WRAPPERS)} "
            f"with one of {list(BASE_STRATEGIES)} as `<wrapper>+<method>`."
        )
    return tuple(wrappers), BASE_STRATEGIES[rest]


def get_strategy(
    name,
    alignment=None,
    num_tasks=None,
    num_experts=8,
    l2_weight=None,
    start=None,
    **settings,
):
    """Build a strategy by name, with PAM's alignment settings.

    Args:
        name: str or `Strategy`. One of `STRATEGY_NAMES`, or a composition
            that `parse_name` reads; a `Strategy` is returned as it is.
        alignment: `keras_pam.AlignmentConfig`. The alignment settings of
            the strategies that align (see `PAM`). Defaults to `None` (the
            defaults, with `**settings`).
        num_tasks: int. The sequence's length, needed by `"olora"` (the
            number of per-task LoRAs the model has room for) and by
            `"multitask"` (the task at which it trains once, on all
            tasks). Defaults to `None`.
        num_experts: int. The number of LoRA experts of `"moelora"`; the
            learner's rank must be a multiple of it. Defaults to `8`.
        l2_weight: float. The weight of `"l2-pull"`'s pull toward the
            global adapter. Defaults to `None` (its own default).
        start: str. Where each task's adapter starts in `"average"`,
            `"ties"` and `"tall"`: `"clone"` or `"fresh"` (see `Average`).
            Defaults to `None` (`"clone"`).
        **settings: alignment settings replacing those of `alignment`
            (`p`, `align_every`, `reinit`, `scope`, `align_first_task`,
            `reset_moments`, `p_rule`; the old name `every` warns).

    Returns:
        A `Strategy`.

    Example:
    ```python
    strategy = get_strategy("lwf+pam", p=0.3)
    strategy.inner.config.p  # 0.3
    ```
    """
    if isinstance(name, Strategy):
        return name
    wrappers, base = parse_name(name)
    settings = renamed_settings(settings, "get_strategy")
    alignment = AlignmentConfig.make(alignment, **settings)
    given = {"l2_weight": l2_weight, "start": start}
    own = {
        key: value
        for key, value in given.items()
        if key in base.method_settings and value is not None
    }
    strategy = base.from_settings(alignment, num_tasks, num_experts, **own)
    for wrapper in reversed(wrappers):
        strategy = wrapper(strategy)
    return strategy


def check_strategy(name, rank=None, num_tasks=None, num_experts=8, **settings):
    """Raise `ValueError` if a method cannot run with these settings.

    A study calls it for every method before the first one runs, so that
    a run of many methods does not stop after hours at its last one. The
    strategy is built as `get_strategy` builds it (which checks its
    constructor's arguments), then every strategy of its `chain()` that
    has a `check_settings(rank=..., num_tasks=...)` method checks the
    run's settings (O-LoRA: the sequence fits its `num_tasks`).

    Args:
        name: str or `Strategy`. As in `get_strategy`.
        rank: int. The learner's LoRA rank. Defaults to `None` (not
            checked).
        num_tasks: int. The sequence's length. Defaults to `None`.
        num_experts: int. As in `get_strategy`. Defaults to `8`.
        **settings: alignment settings, `l2_weight` and `start`, as in
            `get_strategy`.

    Example:
    ```python
    check_strategy("olora", rank=8, num_tasks=6)  # Passes.
    ```
    """
    strategy = get_strategy(
        name, num_tasks=num_tasks, num_experts=num_experts, **settings
    )
    for part in strategy.chain():
        check = getattr(part, "check_settings", None)
        if check is not None:
            check(rank=rank, num_tasks=num_tasks)


def strategy_from_config(entry, alignment=None):
    """The strategy a saved `{"name": ..., "config": ...}` entry describes.

    A run folder records its strategy as `{"name": strategy.name,
    "config": strategy.get_config()}`. Entries written before a wrapper's
    config named its inner strategy rebuild that one from its name and
    `alignment`, the run's alignment settings.

    Args:
        entry: dict. The strategy's name and config.
        alignment: `keras_pam.AlignmentConfig`. The run's alignment
            settings, for entries of that first format. Defaults to `None`
            (the defaults).

    Returns:
        A `Strategy`.

    Example:
    ```python
    strategy = ExperienceReplay(PAM(p=0.3), buffer_size=100)
    entry = {"name": strategy.name, "config": strategy.get_config()}
    strategy_from_config(entry).inner.config.p  # 0.3
    ```
    """
    name, config = entry["name"], dict(entry["config"])
    wrappers, base = parse_name(name)
    if not wrappers:
        return base.from_config(config)
    if "inner" in config:
        inner = strategy_from_config(config.pop("inner"))
        return wrappers[0].from_config({**config, "inner": inner})
    inner_name = name.partition("+")[2] or wrappers[0].default_inner
    inner = get_strategy(inner_name, alignment)
    return wrappers[0](inner, **config)


def adds_weights(strategy):
    """Whether a strategy, or the one a name builds, adds weights to the
    model (a learner that ran it cannot be `reset`)."""
    if isinstance(strategy, str):
        strategy = get_strategy(strategy, num_tasks=1)
    return strategy.adds_weights


def strategy_settings(strategy):
    """The learner settings a strategy object carries, by the learner's
    argument names.

    The alignment settings of its aligning part (`PAM`: all six;
    `PostAlign`: `p`, `reinit` and `scope`) and the `num_tasks` of a
    method that has one (O-LoRA, Multitask). A wrapper carries those of
    the strategies it wraps.

    Args:
        strategy: `Strategy`. The method.

    Returns:
        A dict, e.g. `{"p": 0.5, "align_every": 100, ...}` for `PAM()`.

    Example:
    ```python
    strategy_settings(LwF(PAM(p=0.3)))["p"]  # 0.3
    ```
    """
    settings = {}
    for part in reversed(strategy.chain()):
        if isinstance(part, PAM):
            settings.update(part.config.to_learner_arguments())
        elif isinstance(part, PostAlign):
            settings.update(p=part.p, reinit=part.reinit, scope=part.scope)
        if getattr(part, "num_tasks", None) is not None:
            settings["num_tasks"] = part.num_tasks
    return settings


def _refuse_conflicts(strategy, given):
    """Refuse learner settings that a strategy object already sets
    otherwise: the object's would win, and the learner's be ignored."""
    carried = strategy_settings(strategy)
    conflicts = sorted(
        name
        for name, value in given.items()
        if name in carried and carried[name] != value
    )
    if not conflicts:
        return
    given_text = ", ".join(f"`{n}`={given[n]!r}" for n in conflicts)
    carried_text = ", ".join(f"{n}={carried[n]!r}" for n in conflicts)
    raise ValueError(
        f"The strategy object {strategy.name!r} sets {carried_text} "
        f"itself; the learner's {given_text} would be ignored. Set them on "
        "the strategy (e.g. `strategy=keras_pam.strategies.PAM(p=0.3, "
        "align_every=20)`, `OLoRA(num_tasks=6)`) and leave them out of the "
        "learner's arguments, or name the strategy "
        '(`strategy="pam", p=0.3`).'
    )


def strategy_from_arguments(
    strategy, settings=None, align=True, merge="average", num_tasks=None
):
    """The strategy of `ContinualLearner`'s arguments, and its alignment.

    No argument is silently ignored: `align` and `merge` build a strategy
    only without `strategy`; with a `Strategy` object, an alignment
    setting or `num_tasks` that the object sets otherwise is refused (a
    setting it does not have, as `p` for TIES, is recorded unused, as
    for a named method); `num_tasks` without `strategy` is refused (no
    method of `align` and `merge` uses it).

    Args:
        strategy: str, `Strategy` or `None`. The method, by name or as an
            object; `None` builds it from `align` and `merge`.
        settings: dict. The alignment settings given to the learner, by
            its argument names (`p`, `align_every`, ...); those left out
            take the strategy's own, or the defaults. Defaults to `None`
            (none given).
        align: bool. Without `strategy`: `True` is PAM with `merge`,
            `False` is `Average(merge)`. Defaults to `True`.
        merge: str, callable or `None`. Without `strategy`: the merge;
            `None` with `align=False` is sequential fine-tuning. Defaults
            to `"average"`.
        num_tasks: int. The sequence's length, for a named method that
            needs it (`"olora"`, `"multitask"`; see `get_strategy`).
            Defaults to `None`.

    Returns:
        A tuple `(strategy, alignment)`: the `Strategy`, and the learner's
        `AlignmentConfig` (a strategy object's own settings where it has
        them, else `settings` over the defaults).

    Example:
    ```python
    strategy, alignment = strategy_from_arguments(PAM(p=0.3))
    alignment.p  # 0.3
    ```
    """
    settings = dict(settings or {})
    alignment = AlignmentConfig.from_learner_arguments(**settings)
    if strategy is None:
        if num_tasks is not None:
            raise ValueError(
                f"`num_tasks`={num_tasks!r} is used only by a named method "
                'that needs it (`strategy="olora"` or '
                '`"multitask"`); the method of `align` and `merge` '
                "would ignore it."
            )
        if align:
            return PAM(alignment, merge=merge), alignment
        if merge is not None:
            return Average(merge), alignment
        return Finetune(), alignment
    if align is not True or merge != "average":
        label = repr(strategy) if isinstance(strategy, str) else None
        merge_label = (
            repr(merge) if merge is None or isinstance(merge, str) else "<fn>"
        )
        raise ValueError(
            f"`strategy`={label or strategy.name} sets the method; "
            f"it cannot be combined with `align`={align!r} or "
            f"`merge`={merge_label}. Pass the strategy alone "
            "(e.g. `strategy=PAM(merge='ties')`), or `align` and "
            "`merge` without a strategy."
        )
    if isinstance(strategy, Strategy):
        if num_tasks is not None:
            settings["num_tasks"] = num_tasks
        _refuse_conflicts(strategy, settings)
        carried = {
            LEARNER_ARGUMENTS[name]: value
            for name, value in strategy_settings(strategy).items()
            if name in LEARNER_ARGUMENTS
        }
        return strategy, alignment.replace(**carried)
    return get_strategy(strategy, alignment, num_tasks=num_tasks), alignment
