"""A PaliGemma of a real preset's architecture, built with no download."""

import contextlib
import math

import keras
import keras_hub
import numpy as np

from keras_pam.models.check_pali_gemma import check_pali_gemma
from keras_pam.models.full_vocabulary_tokenizer import (
    build_full_vocabulary_tokenizer,
)
from keras_pam.models.pali_gemma_config import pali_gemma_config
from keras_pam.models.tiny_pali_gemma import causal_lm_of

# Elements per piece of a large random initialisation (JAX, see below).
_CHUNK_ELEMENTS = 2**25


@contextlib.contextmanager
def _chunked_random_initialisation(chunk_elements=_CHUNK_ELEMENTS):
    """On JAX, draw large random weights a slab of rows at a time.

    JAX's threefry generator on CPU holds several 32-bit temporaries per
    element: drawing PaliGemma's 257,152 x 2,048 token embedding in one
    call peaks at 9.5 GB of host memory for a 1.05 GB bfloat16 array (jax
    0.10.2). Drawn in slabs of `chunk_elements`, each with its own key
    (`jax.random.fold_in`) and copied into one numpy array, the peak is
    about twice the array (4.3 GB there): `jnp.concatenate` of the bfloat16
    slabs would peak at 6 times it. The weights are as random, but not the
    values one call would draw.
    """
    if keras.backend.backend() != "jax":
        yield
        return
    import jax
    import jax.numpy as jnp
    from keras.src.backend.jax import random as jax_random

    originals = {
        name: getattr(jax_random, name)
        for name in ("normal", "truncated_normal", "uniform")
    }

    def chunked(original):
        def draw(shape, *args, seed=None, **kwargs):
            shape = tuple(shape)
            if not shape or math.prod(shape) <= chunk_elements:
                return original(shape, *args, seed=seed, **kwargs)
            key = jax_random.jax_draw_seed(seed)
            rows = max(1, chunk_elements // math.prod(shape[1:]))
            values = None
            for i, start in enumerate(range(0, shape[0], rows)):
                slab_shape = (min(rows, shape[0] - start),) + shape[1:]
                slab = original(
                    slab_shape,
                    *args,
                    seed=jax.random.fold_in(key, i),
                    **kwargs,
                )
                slab = np.asarray(slab)
                if values is None:
                    values = np.empty(shape, slab.dtype)
                values[start : start + slab_shape[0]] = slab
            return jnp.asarray(values)

        return draw

    try:
        for name, original in originals.items():
            setattr(jax_random, name, chunked(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(jax_random, name, original)


def build_pali_gemma(
    config="pali_gemma_3b_224",
    num_layers=1,
    vit_num_layers=1,
    dtype="bfloat16",
    texts=(),
    sequence_length=32,
    tokenizer=None,
    seed=None,
):
    """Build a randomly initialised `PaliGemmaCausalLM` at a real width.

    The backbone takes a real preset's configuration (every width, the
    full vocabulary, PaliGemma 2's soft caps, post-norms and sliding
    window) with fewer blocks per tower, so that the library's code paths
    run at the sizes users train, on a CPU and offline. Its tokenizer has
    exactly the embedding's vocabulary size
    (`keras_pam.models.build_full_vocabulary_tokenizer`).

    Args:
        config: str or dict. A shipped configuration name
            (`keras_pam.models.pali_gemma_config`), a JSON path, or the
            `PaliGemmaBackbone` keyword arguments. Defaults to
            `"pali_gemma_3b_224"`.
        num_layers: int. Gemma decoder blocks. Defaults to `1`; `None`
            keeps the configuration's (18 or 26: the whole model).
        vit_num_layers: int. SigLIP encoder blocks. Defaults to `1`;
            `None` keeps the configuration's (27).
        dtype: str. The dtype policy of the backbone. Defaults to
            `"bfloat16"`.
        texts: iterable of str. Sentences whose words the tokenizer must
            know, e.g. `keras_pam.datasets.vocabulary_texts()`. Defaults to
            `()`.
        sequence_length: int. Text tokens per example (prompt and answer).
            Defaults to `32`.
        tokenizer: `keras_hub.models.PaliGemmaTokenizer`. Use this
            tokenizer; its vocabulary size must equal the configuration's.
            Defaults to `None`: one built from `texts`.
        seed: int. Seeds the random weights. Defaults to `None`.

    Returns:
        A `keras_hub.models.PaliGemmaCausalLM` with its preprocessor.

    Example:
    ```python
    causal_lm = build_pali_gemma("pali_gemma2_pt_3b_224")
    causal_lm.backbone.hidden_dim  # 2304
    ```
    """
    if isinstance(config, dict):
        config = dict(config)
    else:
        config = pali_gemma_config(config)
    if num_layers is not None:
        config["num_layers"] = num_layers
    if vit_num_layers is not None:
        config["vit_num_layers"] = vit_num_layers
    if seed is not None:
        # Before any tokenizer is made: TensorFlow's `set_seed` drops the
        # SentencePiece resource of a tokenizer made earlier, and its
        # `tf.data` pipelines then fail ("SentencepieceOp does not exist").
        keras.utils.set_random_seed(seed)
    if tokenizer is None:
        tokenizer = build_full_vocabulary_tokenizer(
            texts, config["vocabulary_size"]
        )
    else:
        if tokenizer.vocabulary_size() != config["vocabulary_size"]:
            raise ValueError(
                "`tokenizer` has a vocabulary of "
                f"{tokenizer.vocabulary_size()} pieces, but the "
                "configuration's `vocabulary_size` is "
                f"{config['vocabulary_size']}. They must be equal."
            )
        if seed is not None:
            # Made anew, for the reason above.
            tokenizer = type(tokenizer)(proto=tokenizer.proto)
    with _chunked_random_initialisation():
        backbone = keras_hub.models.PaliGemmaBackbone(**config, dtype=dtype)
    causal_lm = causal_lm_of(backbone, tokenizer, sequence_length)
    check_pali_gemma(causal_lm)
    return causal_lm
