"""Continual-learning methods as `Strategy` objects, selectable by name.

`get_strategy("pam")` builds one by name; composite names (`er+pam`,
`lwf+pam`, `tall+pam`) wrap PAM. A new method is a new file with a
`Strategy` subclass and one line in `_FACTORIES`.
"""

from keras_pam.alignment_config import AlignmentConfig
from keras_pam.strategies.average import Average
from keras_pam.strategies.experience_replay import ExperienceReplay
from keras_pam.strategies.finetune import Finetune
from keras_pam.strategies.ilora import ILoRA
from keras_pam.strategies.independent import Independent
from keras_pam.strategies.lwf import LwF
from keras_pam.strategies.magmax import MagMax
from keras_pam.strategies.moelora import MoELoRA
from keras_pam.strategies.multitask import Multitask
from keras_pam.strategies.olora import OLoRA
from keras_pam.strategies.pam import PAM
from keras_pam.strategies.post_align import PostAlign
from keras_pam.strategies.strategy import Strategy
from keras_pam.strategies.strategy import StrategyWrapper
from keras_pam.strategies.strategy import TaskContext
from keras_pam.strategies.tall import TALL
from keras_pam.strategies.ties import TIES
from keras_pam.strategies.zero_shot import ZeroShot


def _post_align(alignment):
    return PostAlign(
        p=alignment.p, reinit=alignment.reinit, scope=alignment.scope
    )


def _olora(alignment, num_tasks=None):
    if num_tasks is None:
        raise ValueError(
            "O-LoRA gives each task its own rank slice: pass `num_tasks` "
            "(the length of the sequence)."
        )
    return OLoRA(num_tasks)


_FACTORIES = {
    "zero-shot": lambda alignment: ZeroShot(),
    "independent": lambda alignment: Independent(),
    "multitask": lambda alignment: Multitask(),
    "finetune": lambda alignment: Finetune(),
    "average": lambda alignment: Average(),
    "pam": lambda alignment: PAM(alignment),
    "ties": lambda alignment: TIES(),
    "tall": lambda alignment: TALL(Average()),
    "tall+pam": lambda alignment: TALL(PAM(alignment)),
    "magmax": lambda alignment: MagMax(),
    "post-align": _post_align,
    "lwf": lambda alignment: LwF(Finetune()),
    "lwf+pam": lambda alignment: LwF(PAM(alignment)),
    "er": lambda alignment: ExperienceReplay(Finetune()),
    "er+pam": lambda alignment: ExperienceReplay(PAM(alignment)),
    "ilora": lambda alignment: ILoRA(),
    "olora": _olora,
    "moelora": lambda alignment: MoELoRA(),
}
STRATEGY_NAMES = tuple(_FACTORIES)


def get_strategy(
    name, alignment=None, num_tasks=None, num_experts=8, **settings
):
    """Build a strategy by name, with PAM's alignment settings.

    Args:
        name: str or `Strategy`. One of `STRATEGY_NAMES`; a `Strategy` is
            returned as it is.
        alignment: `keras_pam.AlignmentConfig`. The alignment settings of
            the strategies that align (see `PAM`). Defaults to `None` (the
            defaults, with `**settings`).
        num_tasks: int. The sequence's length, needed by `"olora"` (the
            learner's rank is split among the tasks). Defaults to `None`.
        num_experts: int. The number of LoRA experts of `"moelora"`; the
            learner's rank must be a multiple of it. Defaults to `8`.
        **settings: alignment settings replacing those of `alignment`
            (`p`, `every`, `reinit`, `scope`, `align_first_task`,
            `reset_moments`).

    Returns:
        A `Strategy`.
    """
    if isinstance(name, Strategy):
        return name
    if name not in _FACTORIES:
        raise ValueError(
            f"Unknown strategy {name!r}. Choose one of {list(STRATEGY_NAMES)}."
        )
    alignment = AlignmentConfig.make(alignment, **settings)
    if name == "olora":
        return _olora(alignment, num_tasks)
    if name == "moelora":
        return MoELoRA(num_experts)
    return _FACTORIES[name](alignment)


def adds_weights(strategy):
    """Whether a strategy, or the one a name builds, adds weights to the
    model (a learner that ran it cannot be `reset`)."""
    if isinstance(strategy, str):
        strategy = get_strategy(strategy, num_tasks=1)
    return strategy.adds_weights
