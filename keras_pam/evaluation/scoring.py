"""Batched, compiled scoring of a task: greedy answers, then accuracy."""

import keras
import numpy as np
from keras import ops

from keras_pam.distribution import process_shards
from keras_pam.evaluation.answer_accuracy import answer_accuracy


class GreedyDecoder(keras.Model):
    """Greedy decoding of a fixed number of answer tokens, in one graph.

    Each step runs the Gemma decoder over the whole (short) sequence, reads
    the logits after the last filled position of each row and writes the
    argmax there, marked as a response token (causal attention), just as the
    training data marks answers. The image tower runs once. With fixed input
    shapes, `predict_on_batch` compiles it once per run whatever the adapter
    values, so scoring never recompiles between tasks.

    Args:
        backbone: `keras_hub.models.PaliGemmaBackbone`. The model to decode.
        num_steps: int. The number of tokens generated per example.

    Example:
    ```python
    decoder = GreedyDecoder(causal_lm.backbone, num_steps=2)
    x = causal_lm.preprocessor.generate_preprocess(
        {"images": images, "prompts": prompts}
    )
    token_ids = decoder.predict_on_batch(x)  # (batch, 2)
    ```
    """

    def __init__(self, backbone, num_steps, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_steps = num_steps

    def call(self, inputs):
        backbone = self.backbone
        token_ids = ops.cast(inputs["token_ids"], "int32")
        padding_mask = ops.cast(inputs["padding_mask"], "int32")
        response_mask = ops.zeros_like(padding_mask)
        image_embeddings = backbone.vit_encoder(inputs["images"])
        sequence_length = ops.shape(token_ids)[1]
        last = backbone.image_sequence_length + sequence_length - 1
        positions = ops.expand_dims(ops.arange(sequence_length), 0)
        lengths = ops.sum(padding_mask, axis=-1)
        generated = []
        for _ in range(self.num_steps):
            text = backbone.token_embedding(token_ids)
            text = text * ops.cast(ops.sqrt(backbone.hidden_dim), text.dtype)
            x = ops.concatenate((image_embeddings, text), axis=1)
            for block in backbone.transformer_layers:
                x = block(
                    x, padding_mask=padding_mask, response_mask=response_mask
                )
            x = backbone.layer_norm(x)
            index = ops.minimum(
                backbone.image_sequence_length + lengths - 1, last
            )
            index = ops.reshape(index, (-1, 1, 1))
            hidden = ops.take_along_axis(x, index, axis=1)
            logits = backbone.token_embedding(hidden, reverse=True)
            next_ids = ops.cast(ops.argmax(logits[:, 0, :], axis=-1), "int32")
            generated.append(next_ids)
            write = positions == ops.expand_dims(lengths, 1)
            token_ids = ops.where(
                write, ops.expand_dims(next_ids, 1), token_ids
            )
            padding_mask = ops.where(write, 1, padding_mask)
            response_mask = ops.where(write, 1, response_mask)
            lengths = lengths + 1
        return ops.stack(generated, axis=1)


def _bucket(num_tokens):
    """Round a step count up to a power of two so few graphs are compiled."""
    steps = 2
    while steps < num_tokens:
        steps *= 2
    return steps


class Scorer:
    """Scores a task: greedy answers for its prompts, compared to references.

    One `GreedyDecoder` is compiled per answer-length bucket (2, 4, 8, ...
    tokens) and reused for every task and adapter of a run. Examples are
    batched with a fixed batch size; the last batch is padded.

    Args:
        causal_lm: `keras_hub.models.PaliGemmaCausalLM`. The model, with its
            preprocessor.
        batch_size: int. Examples per decoding batch. Defaults to `32`.
        max_answer_tokens: int. Cap on generated tokens. Defaults to `None`:
            one more than the longest reference answer (room for `<eos>`).

    Example:
    ```python
    scorer = Scorer(causal_lm)
    accuracy = scorer.score(test_data)
    ```
    """

    def __init__(self, causal_lm, batch_size=32, max_answer_tokens=None):
        if causal_lm.preprocessor is None:
            raise ValueError("Scoring needs a causal LM with a preprocessor.")
        self.causal_lm = causal_lm
        self.batch_size = batch_size
        self.max_answer_tokens = max_answer_tokens
        self._decoders = {}

    @property
    def tokenizer(self):
        return self.causal_lm.preprocessor.tokenizer

    def _num_steps(self, references):
        if self.max_answer_tokens is not None:
            return _bucket(self.max_answer_tokens)
        answers = [
            a
            for ref in references
            for a in ([ref] if isinstance(ref, str) else ref)
        ]
        tokens = self.tokenizer(list(answers))
        longest = max(len(t) for t in _to_lists(tokens))
        return _bucket(longest + 1)

    def _decoder(self, num_steps):
        if num_steps not in self._decoders:
            self._decoders[num_steps] = GreedyDecoder(
                self.causal_lm.backbone, num_steps
            )
        return self._decoders[num_steps]

    def predict(self, data, num_steps=8):
        """Greedy answers (str) for a dict of `images` and `prompts`."""
        images, prompts = data["images"], np.asarray(data["prompts"])
        total = len(prompts)
        answers = []
        for start in range(0, total, self.batch_size):
            index = np.arange(start, start + self.batch_size)
            index = np.minimum(index, total - 1)  # Pad the last batch.
            answers.extend(
                self._predict_batch(images[index], prompts[index], num_steps)[
                    : total - start
                ]
            )
        return answers

    def predict_stream(self, split, num_steps=8):
        """Greedy answers (str) for a `StreamingSplit`, batch by batch."""
        from keras_pam.datasets.streaming_split import _as_text

        answers = []
        keys = ("images", "prompts")
        for batch in split.batches(self.batch_size, keys=keys):
            images, prompts = batch["images"], _as_text(batch["prompts"])
            size = len(prompts)
            index = np.minimum(np.arange(self.batch_size), size - 1)
            answers.extend(
                self._predict_batch(images[index], prompts[index], num_steps)[
                    :size
                ]
            )
        return answers

    def _predict_batch(self, images, prompts, num_steps):
        """Greedy answers of one full batch (over several processes, each
        decodes its share and every process gets all the answers)."""
        images = process_shards.local_share(images)
        prompts = process_shards.local_share(prompts)
        x = self.causal_lm.preprocessor.generate_preprocess(
            {"images": images, "prompts": prompts}
        )
        x = {
            "images": ops.convert_to_numpy(x["images"]).astype("float32"),
            "token_ids": ops.convert_to_numpy(x["token_ids"]),
            "padding_mask": ops.convert_to_numpy(x["padding_mask"]),
        }
        ids = np.asarray(self._decoder(num_steps).predict_on_batch(x))
        return self.detokenize(process_shards.gather_shares(ids))

    def detokenize(self, token_ids):
        """Token ids to strings, cut at the first `<eos>` or `<pad>`."""
        stops = {self.tokenizer.end_token_id, self.tokenizer.pad_token_id}
        rows = []
        for row in np.asarray(token_ids).tolist():
            ends = [i for i, token in enumerate(row) if token in stops]
            rows.append(row[: ends[0]] if ends else row)
        # Detokenize the non-empty rows in one call.
        filled = [i for i, row in enumerate(rows) if row]
        texts = [""] * len(rows)
        if filled:
            decoded = self.tokenizer.detokenize([rows[i] for i in filled])
            for i, text in zip(filled, ops.convert_to_numpy(decoded).tolist()):
                texts[i] = text.decode() if isinstance(text, bytes) else text
        return texts

    def score(self, data):
        """Accuracy on `data`: VQA soft accuracy for multi-answer references
        (`data["answers"]`), exact match on `data["responses"]` otherwise,
        both after the standard VQA answer normalisation.

        `data` is a dict of arrays, or a checked
        `keras_pam.streaming_split.StreamingSplit`, read in batches (its
        references' strings are read once and kept)."""
        from keras_pam.datasets.streaming_split import StreamingSplit

        if isinstance(data, StreamingSplit):
            references = data.references()
            predictions = self.predict_stream(data, self._num_steps(references))
            return answer_accuracy(predictions, references)
        references = data.get("answers")
        if references is None:
            references = [str(r) for r in data["responses"]]
        else:
            references = [list(r) for r in references]
        predictions = self.predict(data, self._num_steps(references))
        return answer_accuracy(predictions, references)


def _to_lists(tokens):
    if hasattr(tokens, "to_list"):
        return tokens.to_list()
    if isinstance(tokens, (list, tuple)):  # Ragged, as nested lists.
        return [list(t) for t in tokens]
    return [list(t) for t in np.asarray(tokens)]
