"""The tiny base's settings: its architecture (`TINY_BASE_CONFIG`), the
pretraining defaults, the quick base's, and the check of a build's."""

import keras

DEFAULT_NAME = "tiny_pali_gemma"
DEFAULT_STEPS = 40000
# At 2.5e-3 a name is never bound to its object; 1e-3 learns it
# (docs/testbed.md, "The base").
DEFAULT_LEARNING_RATE = 1e-3
WARMUP_STEPS = 100
# Steps between a build's checkpoints and perception probes.
DEFAULT_CHUNK_STEPS = 2000
# The share of a build's steps that pretrains on places first
# (`keras_pam.datasets.generated_pretraining.PLACES_FIRST_SHARES`) before
# the whole mixture: without it the base never binds a name to its place.
DEFAULT_PLACES_FIRST = 0.2
PROBE_EXAMPLES = 64
# The quick tiny base of smoke tests (`keras-pam run --quick`, the notebooks'
# smoke mode): the same model, pretrained only briefly.
QUICK_NAME = DEFAULT_NAME + "_quick"
QUICK_STEPS = 30
METADATA_FILE = "keras_pam_tiny_base.json"


# Files `save_to_preset` writes; a preset directory missing one is not used.
_PRESET_FILES = ("config.json", "metadata.json", "model.weights.h5")

# The architecture of the tiny base, chosen by measurement
# (docs/testbed.md, "The base"): hidden 96, 3 SigLIP and 3 Gemma layers,
# 64x64 images in 16x16 patches, so 16 image tokens and a patch that holds
# a whole shape or digit (`keras_pam.datasets.grid_world`).
TINY_BASE_CONFIG = {
    "image_size": 64,
    "patch_size": 16,
    "hidden_dim": 96,
    "num_layers": 3,
    "vit_num_layers": 3,
    "num_heads": 2,
    "sequence_length": 20,
}
# The quick base keeps the smaller architecture of earlier bases, so smoke
# runs stay fast.
QUICK_CONFIG = dict(
    TINY_BASE_CONFIG, hidden_dim=64, num_layers=2, vit_num_layers=2
)


def _settings(
    steps,
    batch_size,
    learning_rate,
    num_examples,
    seed,
    config,
    chunk_steps,
    places_first,
):
    return {
        "architecture": dict(TINY_BASE_CONFIG, **(config or {})),
        "steps": int(steps),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "num_examples": int(num_examples),
        "seed": int(seed),
        "chunk_steps": int(chunk_steps),
        "places_first": float(places_first),
        "backend": keras.backend.backend(),
    }


def _build_settings(
    steps,
    batch_size,
    learning_rate,
    num_examples,
    seed,
    config,
    chunk_steps,
    places_first,
):
    """A build's checked settings, the chunking's defaults filled in."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1. Received: {steps!r}")
    if (
        isinstance(places_first, bool)
        or not isinstance(places_first, (int, float))
        or not 0 <= places_first < 1
    ):
        raise ValueError(
            "`places_first` must be a fraction in [0, 1). "
            f"Received: {places_first!r}"
        )
    if chunk_steps is None:
        chunk_steps = min(DEFAULT_CHUNK_STEPS, steps)
    if num_examples is None:
        num_examples = chunk_steps * batch_size
    return _settings(
        steps,
        batch_size,
        learning_rate,
        num_examples,
        seed,
        config,
        chunk_steps,
        places_first,
    )
