"""Models: the tiny, locally built PaliGemma and its pretrained base."""

from keras_pam.models.tiny_base import SHIPPED_PRESET
from keras_pam.models.tiny_base import TINY_BASE_CONFIG
from keras_pam.models.tiny_base import CorruptBaseError
from keras_pam.models.tiny_base import check_base_preset
from keras_pam.models.tiny_base import keras_pam_home
from keras_pam.models.tiny_base import pretrain_tiny_base
from keras_pam.models.tiny_base import quick_tiny_base_preset
from keras_pam.models.tiny_base import shipped_base_preset
from keras_pam.models.tiny_base import tiny_base_preset
from keras_pam.models.tiny_pali_gemma import build_tiny_pali_gemma
from keras_pam.models.tiny_pali_gemma import train_tokenizer
