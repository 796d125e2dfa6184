"""Loading a KerasHub PaliGemma preset, with an error that says what to do."""

import json
import os

from keras_pam.models.check_pali_gemma import check_pali_gemma

# Backbone classes a PaliGemma preset may hold.
_PALI_GEMMA_BACKBONES = ("PaliGemmaBackbone", "PaliGemmaVideoBackbone")


def _check_preset_class(preset):
    """Refuse a local preset directory that holds another model."""
    path = os.path.join(preset, "config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        config = json.load(f)
    found = config.get("class_name") if isinstance(config, dict) else None
    if found not in _PALI_GEMMA_BACKBONES:
        raise ValueError(
            f"The preset {preset!r} holds a {found!r} model (config.json), "
            "not a PaliGemma (`PaliGemmaBackbone`). keras_pam adapts "
            "KerasHub's PaliGemma and PaliGemma 2 presets only."
        )


def _names_a_missing_folder(preset):
    """Whether `preset` reads as a local path (no URL scheme, a separator
    or a leading dot) where nothing exists: KerasHub names have neither."""
    if not isinstance(preset, (str, os.PathLike)):
        return False
    preset = os.fspath(preset)
    if "://" in preset or os.path.exists(preset):
        return False
    return preset.startswith(".") or "/" in preset or os.sep in preset


def load_pali_gemma(preset, load_weights=True, dtype=None, num_frames=None):
    """A `keras_hub.models.PaliGemmaCausalLM` from a preset.

    With `num_frames`, the model takes video clips of that many frames: an
    image preset becomes a `keras_pam.models.PaliGemmaVideoCausalLM` with
    its weights, tokenizer and image converter.

    Args:
        preset: str. A KerasHub preset name (`"pali_gemma_3b_224"`, needs
            Kaggle access), a `kaggle://` or `hf://` handle, or a local
            preset directory (saved with `save_to_preset`).
        load_weights: bool. Load the preset's weights. Defaults to `True`.
        dtype: str. The model's dtype policy. Defaults to `None` (the
            preset's).
        num_frames: int. Frames per example of a video model. Defaults to
            `None`: the preset's model as saved.

    Returns:
        The causal LM, with its preprocessor.

    Example:
    ```python
    causal_lm = load_pali_gemma(keras_pam.models.shipped_base_preset())
    ```
    """
    import keras_hub

    if isinstance(preset, str) and os.path.isdir(preset):
        _check_preset_class(preset)
    try:
        causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(
            preset, load_weights=load_weights, dtype=dtype
        )
    except Exception as error:
        if isinstance(preset, str) and os.path.isdir(preset):
            raise
        missing = ""
        if _names_a_missing_folder(preset):
            missing = (
                f"No folder exists at {preset!r}: a local preset is the "
                "folder that `save_to_preset` wrote.\n"
            )
        raise ValueError(
            f"{missing}Could not load the preset {preset!r}: {error}\n"
            "A KerasHub preset name is downloaded from Kaggle: accept the "
            "model's licence on kaggle.com, then set the environment "
            "variables KAGGLE_USERNAME and KAGGLE_KEY (or "
            "~/.kaggle/kaggle.json; on Colab/Kaggle, the notebook "
            "secrets). Offline, pass the path of a local preset "
            "directory saved with `save_to_preset`."
        ) from error
    check_pali_gemma(causal_lm, name=f"the preset {preset!r}")
    if num_frames is None:
        return causal_lm
    saved_frames = getattr(causal_lm.backbone, "num_frames", None)
    if saved_frames == num_frames:
        return causal_lm
    if saved_frames is not None:
        raise ValueError(
            f"The preset {preset!r} is a video model of {saved_frames} "
            f"frames; `num_frames={num_frames}` asks for another. Convert "
            "its image model, or load it without `num_frames`."
        )
    from keras_pam.models.video_pali_gemma import PaliGemmaVideoCausalLM

    return PaliGemmaVideoCausalLM.from_image_causal_lm(causal_lm, num_frames)
