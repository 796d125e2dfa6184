"""Adapters and their merging: LoRA, `AdapterState`, the merges
(`keras_pam.merging.average`, ...), PAM's sign alignment and the training
settings (`PAPER`, `TESTBED`). May import keras_pam.distribution only."""

from keras_pam.distribution.layout import is_distributed
from keras_pam.merging.dense_merges import average
from keras_pam.merging.dense_merges import magmax
from keras_pam.merging.dense_merges import task_arithmetic
from keras_pam.merging.lora import LORA_FACTOR_NAMES
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.merge_core import MAJORITY_SIGNS
from keras_pam.merging.merge_core import SPACES
from keras_pam.merging.merge_registry import MERGE_FUNCTIONS
from keras_pam.merging.merge_registry import get_merge
from keras_pam.merging.sparse_merges import dare
from keras_pam.merging.sparse_merges import dare_ties
from keras_pam.merging.sparse_merges import magnitude_prune
from keras_pam.merging.sparse_merges import ties
from keras_pam.merging.task_vectors import add
from keras_pam.merging.task_vectors import multiply
from keras_pam.merging.task_vectors import subtract
from keras_pam.merging.task_vectors import tall
from keras_pam.merging.task_vectors import tall_consensus
from keras_pam.merging.task_vectors import tall_mask
from keras_pam.merging.task_vectors import tall_merge

# The merges are serialized by their module (`ContinualLearner.get_config`
# of a learner given a merge function; a run folder's `config.json`): keep
# the path they had before the split, `keras_pam.merging`.
for _merge in (
    add,
    average,
    dare,
    dare_ties,
    get_merge,
    magmax,
    magnitude_prune,
    multiply,
    subtract,
    tall,
    tall_consensus,
    tall_mask,
    tall_merge,
    task_arithmetic,
    ties,
):
    _merge.__module__ = __name__
del _merge
