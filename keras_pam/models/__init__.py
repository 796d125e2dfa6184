"""Models: the tiny, locally built PaliGemma."""

from keras_pam.models.tiny_pali_gemma import build_tiny_pali_gemma
from keras_pam.models.tiny_pali_gemma import train_tokenizer
