"""A tokenizer with PaliGemma's full vocabulary size, built locally."""

import io

import keras_hub

from keras_pam.models.tiny_pali_gemma import BASE_TEXTS

# PaliGemma's vocabulary: Gemma's 256,000 pieces, 1,024 `<loc>` and 128
# `<seg>` tokens (arXiv:2407.07726, Sec. 3.2).
PALI_GEMMA_VOCABULARY_SIZE = 257152

# Gemma's special pieces and their ids (its SentencePiece model).
SPECIAL_PIECES = ("<pad>", "<eos>", "<bos>", "<unk>")


def build_full_vocabulary_tokenizer(
    texts=(), vocabulary_size=PALI_GEMMA_VOCABULARY_SIZE
):
    """A `PaliGemmaTokenizer` of `vocabulary_size` pieces, with no download.

    A word-level SentencePiece model is trained on `texts` (and the
    prompts of the tiny model, `BASE_TEXTS`), with Gemma's special pieces
    at Gemma's ids (`<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3); unused
    filler pieces (`<unused_i>`, never produced by tokenizing) then bring it
    to exactly `vocabulary_size`, so that it fits the token embedding of a
    real PaliGemma (`keras_pam.models.build_pali_gemma`). It reads the
    words of `texts`; any other word is `<unk>`. Building the 257,152
    pieces takes about a second.

    Args:
        texts: iterable of str. Sentences whose words the tokenizer must
            know, e.g. `keras_pam.datasets.vocabulary_texts()`. Defaults to
            `()`.
        vocabulary_size: int. The number of pieces. Defaults to
            `257152`, PaliGemma's.

    Returns:
        A `keras_hub.models.PaliGemmaTokenizer`.

    Example:
    ```python
    tokenizer = build_full_vocabulary_tokenizer(["answer en what color"])
    tokenizer.vocabulary_size()  # 257152
    ```
    """
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    texts = [str(t).strip() for t in list(BASE_TEXTS) + list(texts)]
    texts = [t for t in texts if t]
    words = {w for t in texts for w in t.split()}
    if vocabulary_size < len(words) + len(SPECIAL_PIECES):
        raise ValueError(
            f"`vocabulary_size`={vocabulary_size} cannot hold the "
            f"{len(words)} words of `texts` and the 4 special pieces."
        )
    stream = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=stream,
        vocab_size=len(words) + len(SPECIAL_PIECES),
        model_type="WORD",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(stream.getvalue())
    unused = sentencepiece_model_pb2.ModelProto.SentencePiece.UNUSED
    for i in range(vocabulary_size - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.piece = f"<unused_{i}>"
        piece.score = 0.0
        piece.type = unused
    return keras_hub.models.PaliGemmaTokenizer(proto=proto.SerializeToString())
