"""Checks that a causal LM is a PaliGemma whose tokenizer fits it."""


def check_pali_gemma(causal_lm, name="`causal_lm`"):
    """Raise a `ValueError` unless `causal_lm` is a usable PaliGemma.

    It must be a `keras_hub.models.PaliGemmaCausalLM` (or a subclass, e.g.
    `keras_pam.models.PaliGemmaVideoCausalLM`) on a `PaliGemmaBackbone`,
    and its tokenizer's vocabulary size must equal the token embedding's
    `vocabulary_size`: a smaller tokenizer leaves rows never read, a larger
    one produces ids past the embedding, which JAX and TensorFlow on CPU
    silently clip or zero instead of failing.

    Args:
        causal_lm: The model to check.
        name: str. How the error messages name the model. Defaults to the
            argument's name, `causal_lm`, in backquotes.

    Example:
    ```python
    check_pali_gemma(keras_pam.models.build_tiny_pali_gemma())
    ```
    """
    import keras_hub

    if not isinstance(causal_lm, keras_hub.models.PaliGemmaCausalLM):
        raise ValueError(
            f"{name} must be a `keras_hub.models.PaliGemmaCausalLM`. "
            f"Received: a {type(causal_lm).__name__}."
        )
    backbone = causal_lm.backbone
    if not isinstance(backbone, keras_hub.models.PaliGemmaBackbone):
        raise ValueError(
            f"The backbone of {name} must be a `PaliGemmaBackbone`. "
            f"Received: a {type(backbone).__name__}."
        )
    preprocessor = causal_lm.preprocessor
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is None or getattr(tokenizer, "proto", None) is None:
        # No vocabulary yet (a model from `from_config`, before its assets
        # load): nothing to compare.
        return
    size = tokenizer.vocabulary_size()
    if size != backbone.vocabulary_size:
        raise ValueError(
            f"The tokenizer of {name} has a vocabulary of {size} pieces, "
            "but its token embedding has `vocabulary_size`="
            f"{backbone.vocabulary_size}. They must be equal: use the "
            "tokenizer the model was trained with (for a real-width model "
            "built locally, "
            "`keras_pam.models.build_full_vocabulary_tokenizer`)."
        )
