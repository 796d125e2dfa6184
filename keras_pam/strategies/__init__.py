"""The continual-learning methods as `Strategy` objects, and their registry
(`get_strategy`, `strategy_from_config`). May import the layers below:
distribution, merging, datasets, evaluation, models."""

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
from keras_pam.strategies.registry import BASE_STRATEGIES
from keras_pam.strategies.registry import STRATEGY_NAMES
from keras_pam.strategies.registry import WRAPPERS
from keras_pam.strategies.registry import adds_weights
from keras_pam.strategies.registry import get_strategy
from keras_pam.strategies.registry import parse_name
from keras_pam.strategies.registry import strategy_from_arguments
from keras_pam.strategies.registry import strategy_from_config
from keras_pam.strategies.strategy import Strategy
from keras_pam.strategies.strategy import StrategyWrapper
from keras_pam.strategies.strategy import TaskContext
from keras_pam.strategies.tall import TALL
from keras_pam.strategies.tall import TALLTaskID
from keras_pam.strategies.ties import TIES
from keras_pam.strategies.zero_shot import ZeroShot
