"""Devices and processes: PaliGemma's sharding layout, which process runs,
each process's share of a batch, small backend helpers.
May import no other keras_pam subpackage (the lowest layer)."""

from keras_pam.distribution.layout import device_copy
from keras_pam.distribution.layout import is_distributed
from keras_pam.distribution.layout import pali_gemma_layout_map
