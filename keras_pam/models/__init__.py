"""Models: the tiny PaliGemma and its pretrained base, PaliGemma on video,
real presets' architectures built offline. May import the layers below:
distribution, merging, datasets, evaluation."""

from keras_pam.models.check_pali_gemma import check_pali_gemma
from keras_pam.models.full_vocabulary_tokenizer import (
    build_full_vocabulary_tokenizer,
)
from keras_pam.models.pali_gemma_config import pali_gemma_config
from keras_pam.models.real_width_pali_gemma import build_pali_gemma
from keras_pam.models.tiny_base import SHIPPED_PRESET
from keras_pam.models.tiny_base import CorruptBaseError
from keras_pam.models.tiny_base import check_base_preset
from keras_pam.models.tiny_base import keras_pam_home
from keras_pam.models.tiny_base import quick_tiny_base_preset
from keras_pam.models.tiny_base import shipped_base_preset
from keras_pam.models.tiny_base import tiny_base_preset
from keras_pam.models.tiny_base_pretraining import pretrain_tiny_base
from keras_pam.models.tiny_base_settings import TINY_BASE_CONFIG
from keras_pam.models.tiny_pali_gemma import build_tiny_pali_gemma
from keras_pam.models.tiny_pali_gemma import train_tokenizer
from keras_pam.models.video_pali_gemma import PaliGemmaFrameVit
from keras_pam.models.video_pali_gemma import PaliGemmaVideoBackbone
from keras_pam.models.video_pali_gemma import PaliGemmaVideoCausalLM
from keras_pam.models.video_pali_gemma import PaliGemmaVideoCausalLMPreprocessor
from keras_pam.models.video_pali_gemma import build_tiny_video_pali_gemma
