"""`LoRAModel`: a KerasHub causal LM whose LoRA factors alone train."""

import contextlib
import functools

import keras
import numpy as np

from keras_pam.datasets import data as data_lib
from keras_pam.learner.losses import label_smoothing_loss
from keras_pam.merging.in_step_update import InStepCache
from keras_pam.merging.lora import adopt_lora
from keras_pam.merging.lora import enable_lora
from keras_pam.merging.lora import lora_variables
from keras_pam.merging.lora import quantize_base
from keras_pam.merging.training_settings import PAPER
from keras_pam.models.check_pali_gemma import check_pali_gemma
from keras_pam.models.pali_gemma_preset import load_pali_gemma

# The inputs of the causal LM; other keys of `x` feed extra losses.
MODEL_INPUTS = ("images", "token_ids", "padding_mask", "response_mask")

# Image logits per example (image positions x vocabulary) from which `call`
# projects the text positions only; a smaller model (the tiny ones) runs
# KerasHub's causal LM as it is. PaliGemma-3B at 224 px has 256 x 257,152.
TEXT_LOGITS_ONLY_ABOVE = 2**24


class LoRAModel(keras.Model):
    """A PaliGemma causal LM with LoRA, as a Keras model to `fit`.

    It enables LoRA on the model's projections (both towers) so that only
    the LoRA factors train, compiles with defaults for a causal LM and
    lets a subclass add to the train step: `extra_loss` joins the loss,
    and the `keras_pam.InStepUpdate` in `in_step_update` runs after every
    optimizer step, inside the compiled step on JAX. It knows no
    continual learning; `keras_pam.ContinualLearner` builds on it.

    Args:
        causal_lm: `keras_hub.models.PaliGemmaCausalLM`. The model, with its
            preprocessor. LoRA is enabled on it unless it already is; a
            model that has LoRA (e.g. from KerasHub's `enable_lora` or
            `load_lora_weights`) must have `rank` and `alpha`, and its
            biases are frozen (`keras_pam.lora.adopt_lora`).
        rank: int. LoRA rank. Defaults to `32`, the paper's for a real
            PaliGemma (`keras_pam.PAPER.reasons["rank"]`).
        alpha: float. LoRA scale numerator, the update is
            `(alpha / rank) A B`. Defaults to `None` (equal to `rank`).
        target_layer_names: list of str. Layers to adapt. Defaults to
            `None`: `keras_pam.lora.PALI_GEMMA_LORA_TARGETS`.
        quantize: str. `"int8"` quantises the frozen projections of the
            base before LoRA is enabled (QLoRA-style); a base already
            quantised is kept. Defaults to `None`.
        **kwargs: passed to `keras.Model`.

    Example:
    ```python
    model = LoRAModel(keras_pam.models.build_tiny_pali_gemma(), rank=4)
    model.fit(dataset)  # Batches of (inputs, labels, sample weights).
    ```
    """

    def __init__(
        self,
        causal_lm,
        rank=PAPER.rank,
        alpha=None,
        target_layer_names=None,
        quantize=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if causal_lm.preprocessor is None:
            raise ValueError(
                "`causal_lm` needs a preprocessor (it tokenizes the prompts)."
            )
        # Its class, and a tokenizer that fits the embedding.
        check_pali_gemma(causal_lm)
        self.causal_lm = causal_lm
        backbone = causal_lm.backbone
        if quantize is not None:
            # Before LoRA: quantisation replaces the kernels.
            quantize_base(backbone, quantize)
        if getattr(backbone, "_lora_enabled_layers", None):
            # Enabled elsewhere (e.g. by KerasHub): checked, and its biases
            # frozen, so that here too only the LoRA factors train.
            adopt_lora(backbone, rank, alpha)
        else:
            enable_lora(backbone, rank, alpha, target_layer_names)
        self.rank = rank
        self.alpha = alpha
        self.target_layer_names = target_layer_names
        self.quantize_mode = quantize
        # Tracked, so that the update's variables are training state; it
        # holds at most the active update.
        self._in_step_slot = []
        self._in_step_cache = InStepCache()
        self._train_functions = {}
        self._train_step_key = None
        # Settings traced into the step besides the strategy's (see
        # `traced_step_settings`); `None` until compiled.
        self._step_settings = None
        # Label smoothing of the default loss; a task recipe sets it.
        self.label_smoothing = 0.0
        # The preset the model came from (`from_preset`), or `None`.
        self.preset = None
        self.built = True

    @classmethod
    def from_preset(
        cls, preset, load_weights=True, dtype=None, num_frames=None, **kwargs
    ):
        """Build the model from a KerasHub PaliGemma preset.

        Args:
            preset: str. A preset name, handle or local directory (see
                `keras_pam.models.pali_gemma_preset.load_pali_gemma`).
            load_weights: bool. Load the preset's weights. Defaults to `True`.
            dtype: str. The model's dtype policy, e.g. `"bfloat16"` (the
                LoRA factors stay float32). Defaults to `None`.
            num_frames: int. Make it a video model of clips of that many
                frames (`keras_pam.models.PaliGemmaVideoCausalLM`; an image
                preset's weights serve every frame). Defaults to `None`:
                the preset's model.
            **kwargs: passed to the constructor, e.g. `quantize="int8"`.

        Example:
        ```python
        learner = keras_pam.ContinualLearner.from_preset(
            "pali_gemma_3b_224", quantize="int8", rank=32
        )
        ```
        """
        causal_lm = load_pali_gemma(preset, load_weights, dtype, num_frames)
        model = cls(causal_lm, **kwargs)
        if isinstance(preset, str):
            model.preset = preset
        return model

    def select_train_step(self, key, build_update):
        """Run the train step of `key` from now on.

        A key names what is traced into the step (see
        `keras_pam.training.train_step_key`). The compiled step and the
        in-step update of a key are kept, so a key that comes back reuses
        them (its update `reset`); `None` is never reused. A step is kept
        per key and per `traced_step_settings`.

        Args:
            key: hashable or `None`. The step's key.
            build_update: callable. Makes the `keras_pam.InStepUpdate` of a
                key not seen before, or returns `None` for none.
        """
        self._keep_train_function()
        self._train_step_key = key
        self._step_settings = self.traced_step_settings()
        self._load_train_function()
        update = self._in_step_cache.get(key)
        if update is None:
            update = build_update()
            self._in_step_cache.put(key, update)
        else:
            update.reset()
        # `clear`/`append`: Keras tracks the list's layers through them (a
        # slice assignment would leave the update's variables out of the
        # training state).
        self._in_step_slot.clear()
        if update is not None:
            self._in_step_slot.append(update)

    def traced_step_settings(self):
        """The settings, besides the strategy's, that tracing bakes into
        the train step as constants: the label smoothing, the optimizer's
        weight decay and gradient accumulation, and whether its learning
        rate is a schedule."""
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None:
            return None
        return (
            float(self.label_smoothing),
            optimizer.weight_decay,
            optimizer.gradient_accumulation_steps,
            type(optimizer._learning_rate).__name__,
        )

    def refresh_train_step(self):
        """Switch to the step traced with the current settings (after a
        task recipe changed them), keeping the one traced before."""
        settings = self.traced_step_settings()
        if settings == self._step_settings:
            return
        self._keep_train_function()
        self._step_settings = settings
        self._load_train_function()

    def _keep_train_function(self):
        if self.train_function is not None and self._train_step_key:
            key = (self._train_step_key, self._step_settings)
            self._train_functions[key] = self.train_function

    def _load_train_function(self):
        key = (self._train_step_key, self._step_settings)
        self.train_function = (
            self._train_functions.get(key) if self._train_step_key else None
        )

    @property
    def in_step_update(self):
        """The `keras_pam.InStepUpdate` that the train step runs after
        every optimizer step, or `None`."""
        return self._in_step_slot[0] if self._in_step_slot else None

    def extra_loss(self, x, y, y_pred, sample_weight):
        """A loss added to the task loss inside the train step, or `None`
        (the base class adds none)."""
        return None

    @property
    def image_size(self):
        return self.causal_lm.backbone.image_size

    @property
    def num_frames(self):
        """Frames per example of a video model
        (`keras_pam.models.PaliGemmaVideoBackbone`), `None` for an image
        model."""
        return getattr(self.causal_lm.backbone, "num_frames", None)

    def as_examples(self, data, name="data"):
        """`data` checked for this model (image size, frames): a
        `tf.data.Dataset` or `keras_pam.StreamingSplit` streamed, anything
        else read into numpy (`keras_pam.data.as_split`)."""
        return data_lib.as_split(
            data, self.image_size, name, num_frames=self.num_frames
        )

    def compile(
        self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs
    ):
        """Configure training, with defaults for LoRA on a causal LM.

        Args:
            optimizer: `"auto"` or a `keras.optimizers.Optimizer`. `"auto"` is
                Adam at the paper's learning rate `5e-4`
                (`keras_pam.PAPER.optimizer()`: the paper's rate for LoRA
                on PaliGemma, with the Adam of PaliGemma's transfer
                recipes). Defaults to `"auto"`.
            loss: `"auto"` or a loss. `"auto"` is sparse categorical
                cross-entropy on the logits, on the answer tokens (the
                preprocessor's sample weights). Defaults to `"auto"`.
            weighted_metrics: `"auto"` or a list. `"auto"` is token accuracy
                on the answer. Defaults to `"auto"`.
            **kwargs: passed to `keras.Model.compile`.
        """
        if optimizer == "auto":
            optimizer = PAPER.optimizer()
        # Label smoothing is added to the default loss only.
        self.default_loss = loss == "auto"
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy()]
        # Steps traced with the old optimizer, loss and metrics are stale.
        self._train_functions = {}
        super().compile(
            optimizer=optimizer,
            loss=loss,
            weighted_metrics=weighted_metrics,
            **kwargs,
        )
        # What a task without a recipe trains with.
        self.compiled_optimizer_settings = {
            "weight_decay": self.optimizer.weight_decay,
            "gradient_accumulation_steps": (
                self.optimizer.gradient_accumulation_steps
            ),
        }
        self._step_settings = self.traced_step_settings()

    def call(self, inputs, training=False):
        inputs = {k: inputs[k] for k in MODEL_INPUTS if k in inputs}
        backbone = self.causal_lm.backbone
        image_logits = backbone.image_sequence_length * backbone.vocabulary_size
        if image_logits < TEXT_LOGITS_ONLY_ABOVE:
            return self.causal_lm(inputs, training=training)
        # `self.causal_lm(inputs)`, projecting the text positions only:
        # KerasHub's causal LM projects every position, the image's too
        # (256 at 224 px), onto the vocabulary (257,152 pieces) and then
        # drops the image's, gigabytes of logits and gradients in the train
        # step. The text rows are the same up to float32 rounding (the
        # matmul's shape, and so its blocking, changes).
        hidden = backbone(inputs, training=training)
        hidden = hidden[:, backbone.image_sequence_length :, :]
        return backbone.token_embedding(hidden, reverse=True)

    def make_train_function(self, force=False):
        if keras.backend.backend() != "jax" or (
            self.train_function is not None and not force
        ):
            return super().make_train_function(force)
        # `jax.jit` reuses a trace of any function equal to the one it is
        # given, and two bound `self.train_step` are equal: a step with
        # other constants (a strategy's loss settings, a recipe's weight
        # decay) would run the old trace. A new function traces anew.
        self.train_step = functools.partial(type(self).train_step, self)
        try:
            return super().make_train_function(force)
        finally:
            del self.train_step

    def train_step(self, *args, **kwargs):
        update = self.in_step_update
        if update is None:
            return super().train_step(*args, **kwargs)
        if keras.backend.backend() == "jax":
            # `train_step(state, data)` is pure; the update joins it.
            logs, state = super().train_step(*args, **kwargs)
            return logs, update.stateless_update(self, state)
        logs = super().train_step(*args, **kwargs)
        update.update(lora_variables(self), self.optimizer)
        return logs

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = super().compute_loss(
            x=x,
            y=y,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )
        if self.label_smoothing:
            loss = loss + label_smoothing_loss(
                y, y_pred, sample_weight, self.label_smoothing
            )
        extra = self.extra_loss(x, y, y_pred, sample_weight)
        return loss if extra is None else loss + extra

    def predict_logits(self, examples, batch_size=32):
        """Token logits of the current adapter on a split's training inputs
        (prompt and answer), as numpy `(N, sequence_length, vocabulary)`."""
        dataset = data_lib.training_dataset(
            examples, batch_size, self.causal_lm.preprocessor, shuffle=False
        )
        dataset = dataset.map(lambda x, y, w: x)
        return np.asarray(self.predict(dataset, verbose=0), dtype="float32")

    @contextlib.contextmanager
    def holding_adapter(self, state, then):
        """Inside the block the model holds the adapter `state` (an
        `AdapterState`, or `None` for what it holds now); after it, `then`.
        """
        if state is None or state is then:
            yield
            return
        state.assign_to(self)
        try:
            yield
        finally:
            then.assign_to(self)

    def generate(self, inputs, max_length=None, **kwargs):
        """Generate with the current adapter (`PaliGemmaCausalLM.generate`)."""
        return self.causal_lm.generate(inputs, max_length=max_length, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "causal_lm": keras.saving.serialize_keras_object(
                    self.causal_lm
                ),
                "rank": self.rank,
                "alpha": self.alpha,
                "target_layer_names": self.target_layer_names,
                "quantize": self.quantize_mode,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["causal_lm"] = keras.saving.deserialize_keras_object(
            config["causal_lm"]
        )
        return cls(**config)
