"""A tiny PaliGemma, built locally: no weights or vocabulary downloaded."""

import io

import keras_hub

# Texts the tokenizer always knows, so that any tiny model can read the
# prompts and answers of the examples and tests.
BASE_TEXTS = (
    "answer en what color is the shape",
    "answer en what shape is it",
    "answer en how many shapes are there",
    "caption en",
    "red green blue yellow white black purple orange",
    "circle square triangle cross star",
    "zero one two three four five six seven eight nine ten",
    "0 1 2 3 4 5 6 7 8 9 yes no left right above below a b c d",
)


def train_tokenizer(texts, vocabulary_size=None):
    """Train a word-level SentencePiece `PaliGemmaTokenizer` on `texts`.

    The special tokens PaliGemma expects (`<pad>`, `<bos>`, `<eos>`,
    `<unk>`) take the ids 0 to 3.

    Args:
        texts: iterable of str. The sentences to learn the vocabulary from.
        vocabulary_size: int. The vocabulary size. Defaults to `None`: every
            distinct word plus the four special tokens.

    Returns:
        A `keras_hub.models.PaliGemmaTokenizer`.

    Example:
    ```python
    tokenizer = train_tokenizer(["answer en what color", "red blue"])
    tokenizer.detokenize(tokenizer("what color"))
    ```
    """
    import sentencepiece

    texts = [str(t).strip() for t in texts if str(t).strip()]
    if not texts:
        raise ValueError("`texts` is empty: a tokenizer needs sentences.")
    if vocabulary_size is None:
        words = {w for t in texts for w in t.split()}
        vocabulary_size = len(words) + 4
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=proto,
        vocab_size=vocabulary_size,
        model_type="WORD",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        bos_piece="<bos>",
        eos_piece="<eos>",
        unk_piece="<unk>",
        hard_vocab_limit=False,
        # Every character, digits included, must reach the vocabulary.
        character_coverage=1.0,
        minloglevel=2,
    )
    return keras_hub.models.PaliGemmaTokenizer(proto=proto.getvalue())


def build_tiny_pali_gemma(
    texts=(),
    image_size=16,
    patch_size=8,
    hidden_dim=32,
    num_layers=2,
    vit_num_layers=2,
    num_heads=2,
    sequence_length=16,
    dtype=None,
):
    """Build a small, randomly initialised `PaliGemmaCausalLM`.

    It has the full PaliGemma architecture (a SigLIP image tower and a Gemma
    decoder) at a size that trains in seconds on a CPU, with a word-level
    tokenizer trained on the spot. It is what the tests and the quickstart
    use; its random weights learn through LoRA only after pretraining.

    Args:
        texts: iterable of str. Extra sentences for the tokenizer, on top of
            `BASE_TEXTS`. Defaults to `()`.
        image_size: int. Side of the square input image. Defaults to `16`.
        patch_size: int. Side of an image patch. Defaults to `8`.
        hidden_dim: int. Width of both towers. Defaults to `32`.
        num_layers: int. Gemma decoder blocks. Defaults to `2`.
        vit_num_layers: int. SigLIP encoder blocks. Defaults to `2`.
        num_heads: int. Attention heads in both towers. Defaults to `2`.
        sequence_length: int. Text tokens per example (prompt and answer).
            Defaults to `16`.
        dtype: str. The dtype policy of the backbone. Defaults to `None`.

    Returns:
        A `keras_hub.models.PaliGemmaCausalLM` with its preprocessor.

    Example:
    ```python
    causal_lm = build_tiny_pali_gemma()
    causal_lm.backbone.count_params()
    ```
    """
    tokenizer = train_tokenizer(list(BASE_TEXTS) + list(texts))
    backbone = keras_hub.models.PaliGemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=image_size,
        num_layers=num_layers,
        num_query_heads=num_heads,
        num_key_value_heads=1,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        head_dim=hidden_dim // num_heads,
        vit_patch_size=patch_size,
        vit_num_heads=num_heads,
        vit_hidden_dim=hidden_dim,
        vit_num_layers=vit_num_layers,
        vit_intermediate_dim=2 * hidden_dim,
        dtype=dtype,
    )
    return causal_lm_of(backbone, tokenizer, sequence_length)


def causal_lm_of(backbone, tokenizer, sequence_length):
    """A `PaliGemmaCausalLM` of `backbone` with PaliGemma's preprocessing:
    images scaled to [-1, 1] at the backbone's size, `sequence_length`
    text tokens."""
    size = backbone.image_size
    image_converter = keras_hub.layers.PaliGemmaImageConverter(
        image_size=(size, size), scale=1.0 / 127.5, offset=-1.0
    )
    preprocessor = keras_hub.models.PaliGemmaCausalLMPreprocessor(
        tokenizer=tokenizer,
        image_converter=image_converter,
        sequence_length=sequence_length,
    )
    return keras_hub.models.PaliGemmaCausalLM(
        backbone=backbone, preprocessor=preprocessor
    )
