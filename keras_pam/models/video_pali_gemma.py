"""PaliGemma on video: `F` frames per example, one SigLIP tower, KerasHub.

An example carries `F` frames, `(F, S, S, 3)`. The SigLIP tower encodes each
frame with the same weights and the Gemma decoder sees the frames' image
tokens concatenated in frame order (`F * num_patches` tokens) in front of
the prompt, as PaliGemma's video transfers do. The classes subclass
KerasHub's PaliGemma classes and keep their layers, layer names and weight
order, so that LoRA goes on the same layers (`keras_pam.lora.enable_lora`
works unchanged), an adapter of an image model fits the video model and
back, and an image model's weights load into a video model
(`PaliGemmaVideoCausalLM.from_image_causal_lm`). `save_to_preset` and
`from_preset` round-trip: `keras_hub.models.PaliGemmaCausalLM.from_preset`
of a saved video preset returns a `PaliGemmaVideoCausalLM` once this module
is imported.

With `num_frames=1` the backbone is the image model: it takes
`(batch, S, S, 3)` images, and its preprocessor also takes one-frame clips
`(batch, 1, S, S, 3)`.
"""

# Over 600 lines on purpose: the four classes are one model on clips (the
# frame ViT, the backbone, the preprocessor, the causal LM), each built on
# the one before and saved in presets by its registered name; apart, the
# video model would be read across four files.

import keras
import numpy as np
from keras import ops
from keras_hub.models import PaliGemmaBackbone
from keras_hub.models import PaliGemmaCausalLM
from keras_hub.models import PaliGemmaCausalLMPreprocessor
from keras_hub.src.models.backbone import Backbone
from keras_hub.src.models.gemma.rms_normalization import RMSNormalization
from keras_hub.src.models.pali_gemma.pali_gemma_decoder_block import (
    PaliGemmaDecoderBlock,
)
from keras_hub.src.models.pali_gemma.pali_gemma_vit import PaliGemmaVit

from keras_pam.models.tiny_pali_gemma import build_tiny_pali_gemma


def _check_num_frames(num_frames):
    if (
        isinstance(num_frames, bool)
        or not isinstance(num_frames, (int, np.integer))
        or num_frames < 1
    ):
        raise ValueError(
            f"`num_frames` must be a positive int. Received: {num_frames!r}"
        )
    return int(num_frames)


@keras.saving.register_keras_serializable(package="keras_pam")
class PaliGemmaFrameVit(PaliGemmaVit):
    """PaliGemma's SigLIP tower, applied to every frame of a clip.

    It is a `PaliGemmaVit` (same layers and weights) that also takes clips
    `(batch, num_frames, S, S, 3)`: the frames are encoded as one batch
    and their image tokens concatenated in frame order, giving
    `(batch, num_frames * num_patches, num_classes)`. Images
    `(batch, S, S, 3)` are encoded as by `PaliGemmaVit` when `num_frames`
    is `1`.

    Args:
        num_frames: int. Frames per clip. Defaults to `1`.
        **kwargs: the arguments of `PaliGemmaVit` (`image_size`,
            `patch_size`, `num_heads`, `hidden_dim`, `num_layers`,
            `intermediate_dim`, `num_classes`, ...).

    Example:
    ```python
    vit = PaliGemmaFrameVit(
        num_frames=2, image_size=16, patch_size=8, num_heads=2,
        hidden_dim=32, num_layers=1, intermediate_dim=64, num_classes=32,
    )
    vit(np.zeros((1, 2, 16, 16, 3))).shape  # (1, 8, 32)
    ```
    """

    def __init__(self, num_frames=1, **kwargs):
        num_frames = _check_num_frames(num_frames)
        super().__init__(**kwargs)
        self.num_frames = num_frames
        self.frame_sequence_length = self.image_sequence_length
        self.image_sequence_length = num_frames * self.frame_sequence_length
        # The input rank is checked in `call`: a clip is 5-D.
        self.input_spec = None

    def _clip_frames(self, shape):
        """Whether `shape` is a clip (5-D); checks its frame count."""
        if len(shape) == 5:
            if shape[1] is not None and shape[1] != self.num_frames:
                raise ValueError(
                    f"The model takes clips of {self.num_frames} frames; "
                    f"received {shape[1]} frames (input shape {shape})."
                )
            return True
        if len(shape) == 4 and self.num_frames == 1:
            return False
        raise ValueError(
            "The model takes clips of shape (batch, "
            f"{self.num_frames}, size, size, 3); received shape "
            f"{tuple(shape)}."
        )

    def call(self, inputs, training=None, mask=None):
        if not self._clip_frames(tuple(inputs.shape)):
            return super().call(inputs, training=training, mask=mask)
        frames = ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))
        tokens = super().call(frames, training=training)
        return ops.reshape(
            tokens, (-1, self.image_sequence_length, tokens.shape[-1])
        )

    def compute_output_spec(self, inputs, training=None, mask=None):
        shape = tuple(inputs.shape)
        if not self._clip_frames(shape):
            return super().compute_output_spec(inputs)
        frames = keras.KerasTensor((None,) + shape[2:], dtype=inputs.dtype)
        tokens = super().compute_output_spec(frames)
        return keras.KerasTensor(
            (shape[0], self.image_sequence_length, tokens.shape[-1]),
            dtype=tokens.dtype,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"num_frames": self.num_frames})
        return config


@keras.saving.register_keras_serializable(package="keras_pam")
class PaliGemmaVideoBackbone(PaliGemmaBackbone):
    """PaliGemma backbone whose examples are clips of `num_frames` frames.

    It is `keras_hub.models.PaliGemmaBackbone` with its SigLIP tower
    applied to every frame (a `PaliGemmaFrameVit`, the same weights for
    each frame): the `images` input is `(batch, num_frames, S, S, 3)` and
    the decoder sees `num_frames * num_patches` image tokens, the frames'
    in frame order, before the text. `image_sequence_length` counts them
    all, so `PaliGemmaCausalLM`'s output slicing, `generate` and
    `keras_pam.scoring` work unchanged. The layers, their names and the
    weight order are the image backbone's: LoRA goes on the same layers,
    and the image backbone's weights fit (`from_image_backbone`). With
    `num_frames=1` it is the image backbone, `images` of shape
    `(batch, S, S, 3)`.

    Args:
        num_frames: int. Frames per example. Defaults to `1`.
        **kwargs: the arguments of `keras_hub.models.PaliGemmaBackbone`
            (`vocabulary_size`, `image_size`, `num_layers`, ...).

    Example:
    ```python
    backbone = PaliGemmaVideoBackbone(
        num_frames=2,
        vocabulary_size=64,
        image_size=16,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=32,
        intermediate_dim=64,
        head_dim=16,
        vit_patch_size=8,
        vit_num_heads=2,
        vit_hidden_dim=32,
        vit_num_layers=1,
        vit_intermediate_dim=64,
    )
    backbone({
        "images": np.zeros((1, 2, 16, 16, 3)),
        "token_ids": np.ones((1, 8), "int32"),
        "padding_mask": np.ones((1, 8), "int32"),
        "response_mask": np.zeros((1, 8), "int32"),
    }).shape  # (1, 2 * 4 + 8, 32)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        image_size,
        num_layers,
        num_query_heads,
        num_key_value_heads,
        hidden_dim,
        intermediate_dim,
        head_dim,
        vit_patch_size,
        vit_num_heads,
        vit_hidden_dim,
        vit_num_layers,
        vit_intermediate_dim=None,
        vit_pooling=None,
        vit_classifier_activation=None,
        vit_name=None,
        query_head_dim_normalize=True,
        use_post_ffw_norm=False,
        use_post_attention_norm=False,
        attention_logit_soft_cap=None,
        final_logit_soft_cap=None,
        use_sliding_window_attention=False,
        sliding_window_size=4096,
        layer_norm_epsilon=1e-6,
        dropout=0,
        num_frames=1,
        dtype=None,
        **kwargs,
    ):
        # The layers and the graph of `PaliGemmaBackbone.__init__`, with the
        # frame-wise SigLIP tower and a clip input; `Backbone.__init__`
        # builds the functional model (the parent's would build the image
        # graph).
        num_frames = _check_num_frames(num_frames)
        image_size = int(image_size)
        # === Layers ===
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            tie_weights=True,
            embeddings_initializer=keras.initializers.VarianceScaling(
                scale=1.0,
                mode="fan_in",
                distribution="untruncated_normal",
                seed=None,
            ),
            dtype=dtype,
            logit_soft_cap=final_logit_soft_cap,
            name="token_embedding",
        )
        vit_intermediate_dim = vit_intermediate_dim or 4304
        self.vit_encoder = PaliGemmaFrameVit(
            num_frames=num_frames,
            image_size=image_size,
            patch_size=vit_patch_size,
            num_heads=vit_num_heads,
            hidden_dim=vit_hidden_dim,
            num_layers=vit_num_layers,
            intermediate_dim=vit_intermediate_dim,
            pooling=vit_pooling,
            num_classes=hidden_dim,
            classifier_activation=vit_classifier_activation,
            dtype=dtype,
            name=vit_name,
        )
        self.transformer_layers = []
        for i in range(num_layers):
            sliding_window = use_sliding_window_attention and (i % 2 == 0)
            self.transformer_layers.append(
                PaliGemmaDecoderBlock(
                    hidden_dim=hidden_dim,
                    intermediate_dim=intermediate_dim,
                    head_dim=head_dim,
                    num_query_heads=num_query_heads,
                    num_key_value_heads=num_key_value_heads,
                    query_head_dim_normalize=query_head_dim_normalize,
                    use_post_ffw_norm=use_post_ffw_norm,
                    use_post_attention_norm=use_post_attention_norm,
                    logit_soft_cap=attention_logit_soft_cap,
                    use_sliding_window_attention=sliding_window,
                    sliding_window_size=sliding_window_size,
                    dropout=dropout,
                    dtype=dtype,
                    name=f"decoder_block_{i}",
                )
            )
        self.layer_norm = RMSNormalization(
            epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="final_normalization",
        )

        # === Functional Model ===
        # One frame: the image backbone's input, `(batch, S, S, 3)`.
        image_shape = (image_size, image_size, 3)
        if num_frames > 1:
            image_shape = (num_frames,) + image_shape
        image_input = keras.Input(shape=image_shape, name="images")
        token_id_input = keras.Input(
            shape=(None,), dtype="int32", name="token_ids"
        )
        padding_mask_input = keras.Input(
            shape=(None,), dtype="int32", name="padding_mask"
        )
        response_mask_input = keras.Input(
            shape=(None,), dtype="int32", name="response_mask"
        )
        img_embeddings = self.vit_encoder(image_input)
        text_embeddings = self.token_embedding(token_id_input)
        text_embeddings = text_embeddings * ops.cast(
            ops.sqrt(hidden_dim), text_embeddings.dtype
        )
        x = ops.concatenate((img_embeddings, text_embeddings), axis=1)
        for transformer_layer in self.transformer_layers:
            x = transformer_layer(
                x,
                padding_mask=padding_mask_input,
                response_mask=response_mask_input,
            )
        sequence_output = self.layer_norm(x)
        Backbone.__init__(
            self,
            inputs={
                "images": image_input,
                "token_ids": token_id_input,
                "padding_mask": padding_mask_input,
                "response_mask": response_mask_input,
            },
            outputs=sequence_output,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.num_frames = num_frames
        self.vocabulary_size = vocabulary_size
        self.image_size = image_size
        self.num_layers = num_layers
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.head_dim = head_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.query_head_dim_normalize = query_head_dim_normalize
        self.use_post_ffw_norm = use_post_ffw_norm
        self.use_post_attention_norm = use_post_attention_norm
        self.attention_logit_soft_cap = attention_logit_soft_cap
        self.final_logit_soft_cap = final_logit_soft_cap
        self.sliding_window_size = sliding_window_size
        self.use_sliding_window_attention = use_sliding_window_attention
        self.vit_patch_size = vit_patch_size
        self.vit_num_heads = vit_num_heads
        self.vit_hidden_dim = vit_hidden_dim
        self.vit_num_layers = vit_num_layers
        self.vit_intermediate_dim = vit_intermediate_dim
        self.vit_pooling = vit_pooling
        self.vit_classifier_activation = vit_classifier_activation
        self.vit_name = vit_name
        # All the frames' image tokens, in front of the text.
        self.image_sequence_length = self.vit_encoder.image_sequence_length

    @classmethod
    def from_image_backbone(cls, backbone, num_frames):
        """A video backbone with the weights of an image backbone.

        Args:
            backbone: `keras_hub.models.PaliGemmaBackbone`. The image
                backbone, without LoRA (enable it on the result).
            num_frames: int. Frames per example.

        Returns:
            A `PaliGemmaVideoBackbone`.

        Example:
        ```python
        image_backbone = keras_hub.models.PaliGemmaBackbone.from_preset(
            "pali_gemma_3b_224"
        )
        backbone = PaliGemmaVideoBackbone.from_image_backbone(
            image_backbone, num_frames=4
        )
        ```
        """
        if getattr(backbone, "_lora_enabled_layers", None):
            raise ValueError(
                "`backbone` has LoRA enabled; convert the backbone without "
                "LoRA and enable LoRA on the video backbone."
            )
        config = {**backbone.get_config(), "num_frames": num_frames}
        config.pop("name", None)
        video = cls.from_config(config)
        video.set_weights(backbone.get_weights())
        return video

    def get_config(self):
        config = super().get_config()
        config.update({"num_frames": self.num_frames})
        return config


def _as_array(images):
    if isinstance(images, (list, tuple)):
        return np.asarray(images)
    return images


def _reshape(x, shape):
    """`reshape` for numpy, TensorFlow (in `tf.data`) and backend tensors."""
    if isinstance(x, np.ndarray):
        return np.reshape(x, shape)
    try:
        import tensorflow as tf

        if isinstance(x, tf.Tensor):
            return tf.reshape(x, shape)
    except ImportError:
        pass
    return ops.reshape(x, shape)


@keras.saving.register_keras_serializable(package="keras_pam")
class PaliGemmaVideoCausalLMPreprocessor(PaliGemmaCausalLMPreprocessor):
    """PaliGemma preprocessor for clips of `num_frames` frames.

    It is `keras_hub.models.PaliGemmaCausalLMPreprocessor` for
    `PaliGemmaVideoBackbone`: `images` are clips
    `(batch, num_frames, S, S, 3)` (or one clip, `(num_frames, S, S, 3)`),
    whose frames go through the image converter one by one. The text is
    packed as for images: the backbone puts the
    `num_frames * num_patches` image tokens in front of it (its
    `image_sequence_length`). With `num_frames=1` it takes images
    `(batch, S, S, 3)` as the image preprocessor does, and one-frame clips
    `(batch, 1, S, S, 3)`.

    Args:
        tokenizer: `keras_hub.models.PaliGemmaTokenizer`. The tokenizer.
        image_converter: `keras_hub.layers.ImageConverter`. Applied to
            every frame. Defaults to `None`.
        sequence_length: int. Text tokens per example. Defaults to `1024`.
        add_start_token: bool. Prepend `<bos>`. Defaults to `True`.
        add_end_token: bool. Append `<eos>` to the response. Defaults to
            `True`.
        num_frames: int. Frames per clip; the backbone's. Defaults to `1`.

    Example:
    ```python
    preprocessor = PaliGemmaVideoCausalLMPreprocessor(
        tokenizer, image_converter, sequence_length=16, num_frames=2
    )
    x, y, sample_weight = preprocessor({
        "images": np.zeros((1, 2, 16, 16, 3)),
        "prompts": ["caption en\\n"],
        "responses": ["red circle"],
    })
    ```
    """

    backbone_cls = PaliGemmaVideoBackbone

    def __init__(
        self,
        tokenizer,
        image_converter=None,
        sequence_length=1024,
        add_start_token=True,
        add_end_token=True,
        num_frames=1,
        **kwargs,
    ):
        super().__init__(
            tokenizer=tokenizer,
            image_converter=image_converter,
            sequence_length=sequence_length,
            add_start_token=add_start_token,
            add_end_token=add_end_token,
            **kwargs,
        )
        self.num_frames = _check_num_frames(num_frames)

    def _split_frames(self, images):
        """Images as the image converter takes them, and how to fold the
        frames back (`None`: nothing to fold)."""
        images = _as_array(images)
        shape = tuple(images.shape)
        frames = self.num_frames
        if len(shape) == 5:
            if shape[1] is not None and shape[1] != frames:
                raise ValueError(
                    f"The model takes clips of {frames} frames; received "
                    f"clips of {shape[1]} (`images` of shape {shape})."
                )
            if frames == 1:
                return images[:, 0], None
            # The frames of the whole batch go through the converter.
            return images, shape
        if len(shape) == 4 and (frames == 1 or shape[0] == frames):
            # A batch of images, or one clip (a batch of its frames).
            return images, None
        raise ValueError(
            f"The model takes clips of {frames} frames, `images` of shape "
            f"(batch, {frames}, size, size, 3); received shape {shape}."
        )

    def _convert(self, x):
        images, clip_shape = self._split_frames(x["images"])
        x = dict(x)
        if clip_shape is None or self.image_converter is None:
            x["images"] = images
            return x, None
        x["images"] = _reshape(images, (-1,) + clip_shape[2:])
        return x, clip_shape

    def _fold(self, images, clip_shape):
        if clip_shape is None:
            return images
        return _reshape(
            images, (-1,) + clip_shape[1:2] + tuple(images.shape[1:])
        )

    def _call_python(self, x, y=None, sample_weight=None, sequence_length=None):
        x, clip_shape = self._convert(x)
        x, y, sample_weight = super()._call_python(
            x, y=y, sample_weight=sample_weight, sequence_length=sequence_length
        )
        x["images"] = self._fold(x["images"], clip_shape)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def _generate_preprocess_python(self, x, sequence_length=None):
        x, clip_shape = self._convert(x)
        x = super()._generate_preprocess_python(
            x, sequence_length=sequence_length
        )
        x["images"] = self._fold(x["images"], clip_shape)
        return x

    def get_config(self):
        config = super().get_config()
        config.update({"num_frames": self.num_frames})
        return config


@keras.saving.register_keras_serializable(package="keras_pam")
class PaliGemmaVideoCausalLM(PaliGemmaCausalLM):
    """PaliGemma causal LM on clips of `num_frames` frames.

    It is `keras_hub.models.PaliGemmaCausalLM` with a
    `PaliGemmaVideoBackbone` and a `PaliGemmaVideoCausalLMPreprocessor`:
    `fit`, `predict`, `generate`, `save_to_preset` and `from_preset` work as
    for images, on `images` of shape `(batch, num_frames, S, S, 3)` (one
    clip `(num_frames, S, S, 3)` for `generate`). Once this module is
    imported, `keras_hub.models.PaliGemmaCausalLM.from_preset` of a saved
    video preset returns this class.

    Args:
        preprocessor: `PaliGemmaVideoCausalLMPreprocessor` or `None`. Its
            `num_frames` must be the backbone's.
        backbone: `PaliGemmaVideoBackbone`. The backbone.

    Example:
    ```python
    causal_lm = build_tiny_video_pali_gemma(num_frames=2)
    causal_lm.generate({
        "images": np.zeros((1, 2, 16, 16, 3), "uint8"),
        "prompts": ["caption en\\n"],
    })
    ```
    """

    backbone_cls = PaliGemmaVideoBackbone
    preprocessor_cls = PaliGemmaVideoCausalLMPreprocessor

    def __init__(self, preprocessor, backbone, **kwargs):
        backbone_frames = getattr(backbone, "num_frames", None)
        if backbone_frames is None:
            raise ValueError(
                "`backbone` must be a `PaliGemmaVideoBackbone`; received "
                f"{type(backbone).__name__}. Convert an image backbone with "
                "`PaliGemmaVideoBackbone.from_image_backbone`."
            )
        frames = getattr(preprocessor, "num_frames", None)
        if preprocessor is not None and frames != backbone_frames:
            raise ValueError(
                f"The preprocessor takes {frames} frames per example but "
                f"the backbone {backbone_frames}: use a "
                "`PaliGemmaVideoCausalLMPreprocessor` with "
                f"`num_frames={backbone_frames}`."
            )
        super().__init__(preprocessor=preprocessor, backbone=backbone, **kwargs)

    def generate_step(self, inputs, stop_token_ids=None):
        images = inputs["images"]
        rank = len(ops.shape(images))
        if self.backbone.num_frames > 1 and rank == 4:
            # One clip: unlike the text, not upranked by `generate`.
            inputs = {**inputs, "images": ops.expand_dims(images, axis=0)}
        return super().generate_step(inputs, stop_token_ids=stop_token_ids)

    @classmethod
    def from_image_causal_lm(cls, causal_lm, num_frames):
        """A video causal LM with the weights, tokenizer and image
        converter of an image `PaliGemmaCausalLM`.

        Args:
            causal_lm: `keras_hub.models.PaliGemmaCausalLM`. The image
                model, without LoRA.
            num_frames: int. Frames per example.

        Returns:
            A `PaliGemmaVideoCausalLM` (sharing the tokenizer and image
            converter of `causal_lm`).

        Example:
        ```python
        image_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(
            "pali_gemma_3b_224"
        )
        video_lm = PaliGemmaVideoCausalLM.from_image_causal_lm(
            image_lm, num_frames=4
        )
        ```
        """
        backbone = PaliGemmaVideoBackbone.from_image_backbone(
            causal_lm.backbone, num_frames
        )
        preprocessor = None
        source = causal_lm.preprocessor
        if source is not None:
            preprocessor = PaliGemmaVideoCausalLMPreprocessor(
                tokenizer=source.tokenizer,
                image_converter=source.image_converter,
                sequence_length=source.sequence_length,
                add_start_token=source.add_start_token,
                add_end_token=source.add_end_token,
                num_frames=backbone.num_frames,
            )
        return cls(preprocessor=preprocessor, backbone=backbone)


def build_tiny_video_pali_gemma(num_frames=2, **kwargs):
    """Build a small, randomly initialised `PaliGemmaVideoCausalLM`.

    It is `keras_pam.models.build_tiny_pali_gemma`'s model (the tests'
    tiny PaliGemma, with its word-level tokenizer) taking clips of
    `num_frames` frames.

    Args:
        num_frames: int. Frames per example. Defaults to `2`.
        **kwargs: passed to `build_tiny_pali_gemma` (`texts`,
            `image_size`, `patch_size`, `hidden_dim`, `num_layers`,
            `vit_num_layers`, `num_heads`, `sequence_length`, `dtype`).

    Returns:
        A `PaliGemmaVideoCausalLM` with its preprocessor.

    Example:
    ```python
    causal_lm = build_tiny_video_pali_gemma(num_frames=3)
    causal_lm.backbone.image_sequence_length  # 3 frames * 4 patches
    ```
    """
    return PaliGemmaVideoCausalLM.from_image_causal_lm(
        build_tiny_pali_gemma(**kwargs), num_frames
    )
