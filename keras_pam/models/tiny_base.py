"""A tiny *pretrained* PaliGemma, shipped with the package as a KerasHub
preset.

A randomly initialised PaliGemma cannot learn most of the generated tasks
through LoRA alone: LoRA adapts features, it does not create them. So the
tiny base is pretrained first, all of its weights, on a broad generated
mixture (`keras_pam.datasets.pretraining_mixture`: captions and generic
questions about shapes, colours, sizes, counts, digits and positions), the
way PaliGemma is pretrained before it is transferred. The result is saved
with `save_to_preset` and loaded back through `from_preset(directory)`, the
same path that loads `pali_gemma_3b_224`. Nothing is downloaded.

One build of it ships inside the package (`SHIPPED_PRESET`, returned by
`shipped_base_preset` after a check of its recorded checksums), so every
machine uses the same base; `keras-pam pretrain` rebuilds it.
"""

import hashlib
import json
import math
import os
import shutil
import tempfile

import keras
import keras_hub
import numpy as np

DEFAULT_NAME = "tiny_pali_gemma"
DEFAULT_STEPS = 40000
# At 2.5e-3 a name is never bound to its object; 1e-3 learns it
# (docs/testbed.md, "The base").
DEFAULT_LEARNING_RATE = 1e-3
WARMUP_STEPS = 100
# Steps between a build's checkpoints and perception probes.
DEFAULT_CHUNK_STEPS = 2000
# The share of a build's steps that pretrains on places first
# (`keras_pam.datasets.generated.PLACES_FIRST_SHARES`) before the whole
# mixture: without it the base never binds a name to its place.
DEFAULT_PLACES_FIRST = 0.2
PROBE_EXAMPLES = 64
# The quick tiny base of smoke tests (`keras-pam run --quick`, the notebooks'
# smoke mode): the same model, pretrained only briefly.
QUICK_NAME = DEFAULT_NAME + "_quick"
QUICK_STEPS = 30
METADATA_FILE = "keras_pam_tiny_base.json"
SHIPPED_PRESET = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "presets", DEFAULT_NAME
)
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


class CorruptBaseError(ValueError):
    """A base preset whose files do not match their recorded checksums."""


def keras_pam_home(home=None):
    """The cache folder of keras_pam.

    Args:
        home: str. An explicit folder. Defaults to `None`: the environment
            variable `KERAS_PAM_HOME`, else `~/.keras/keras_pam`.

    Returns:
        The folder, as an absolute str (not created).
    """
    if home is None:
        home = os.environ.get("KERAS_PAM_HOME") or os.path.join(
            "~", ".keras", "keras_pam"
        )
    return os.path.abspath(os.path.expanduser(os.fspath(home)))


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


def _read_metadata(directory):
    try:
        with open(os.path.join(directory, METADATA_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(directory):
    return _read_metadata(directory) is not None and all(
        os.path.isfile(os.path.join(directory, f)) for f in _PRESET_FILES
    )


def _same_build(metadata, settings):
    # The backend only changes the floating point noise of the build.
    def key(d):
        return {k: v for k, v in d.items() if k not in ("backend", "loss")}

    return key(metadata.get("settings", {})) == key(settings)


def preset_checksums(directory):
    """The SHA-256 of every file of a preset directory but its metadata.

    Args:
        directory: str. A preset directory.

    Returns:
        A dict of relative path (with `/`) to hex digest, sorted by path.

    Example:
    ```python
    checksums = preset_checksums(shipped_base_preset())
    checksums["model.weights.h5"]
    ```
    """
    checksums = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory).replace(os.sep, "/")
            if relative == METADATA_FILE:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            checksums[relative] = digest.hexdigest()
    return dict(sorted(checksums.items()))


def _rebuild_hint(metadata, directory):
    command = (metadata or {}).get("command")
    if not command:
        command = f"keras-pam pretrain --output {directory}"
    return f"Rebuild it with `{command}`"


def check_base_preset(directory):
    """Check a tiny base preset against the checksums it records.

    Args:
        directory: str. A preset directory written by `write_base_preset`.

    Returns:
        Its metadata dict (settings, loss, command, checksums).

    Raises:
        CorruptBaseError: a file is missing, added or changed, or the
            metadata is unreadable. The message names the files and the
            command that rebuilds the preset.

    Example:
    ```python
    check_base_preset(shipped_base_preset())["command"]
    ```
    """
    metadata = _read_metadata(directory)
    recorded = (metadata or {}).get("checksums")
    if not isinstance(recorded, dict):
        raise CorruptBaseError(
            f"The tiny base at {directory} has no readable {METADATA_FILE} "
            f"with checksums. {_rebuild_hint(metadata, directory)}."
        )
    actual = preset_checksums(directory)
    bad = sorted(
        name
        for name in set(recorded) | set(actual)
        if recorded.get(name) != actual.get(name)
    )
    if bad:
        raise CorruptBaseError(
            f"The tiny base at {directory} fails its checksum: "
            f"{', '.join(bad)} differ from what {METADATA_FILE} records. "
            f"{_rebuild_hint(metadata, directory)} (or reinstall "
            "keras-pam)."
        )
    return metadata


def shipped_base_preset():
    """The tiny pretrained base that ships with keras_pam, checked.

    The preset directory inside the package, after `check_base_preset`:
    every machine that installs keras_pam uses these same weights.
    `keras-pam pretrain` rebuilds it; its metadata records the command
    that built the shipped copy.

    Returns:
        The preset directory, a str to pass to
        `ContinualLearner.from_preset` or
        `keras_hub.models.PaliGemmaCausalLM.from_preset`.

    Raises:
        CorruptBaseError: the shipped files fail their checksums.

    Example:
    ```python
    preset = shipped_base_preset()
    learner = keras_pam.ContinualLearner.from_preset(preset, rank=8)
    ```
    """
    check_base_preset(SHIPPED_PRESET)
    return SHIPPED_PRESET


def build_tiny_base_model(texts=(), config=None):
    """Build the randomly initialised model of the tiny base.

    The architecture of `build_tiny_pali_gemma` with `TINY_BASE_CONFIG`,
    and a tokenizer that knows every word of `BASE_TEXTS` and `texts`.

    Args:
        texts: iterable of str. The sentences the tokenizer must know.
            Defaults to `()`.
        config: dict. Entries of `TINY_BASE_CONFIG` to change (such as
            `QUICK_CONFIG`). Defaults to `None`.

    Returns:
        A `keras_hub.models.PaliGemmaCausalLM` with its preprocessor.
    """
    from keras_pam.models.tiny_pali_gemma import BASE_TEXTS
    from keras_pam.models.tiny_pali_gemma import causal_lm_of
    from keras_pam.models.tiny_pali_gemma import train_tokenizer

    config = dict(TINY_BASE_CONFIG, **(config or {}))
    tokenizer = train_tokenizer(list(BASE_TEXTS) + list(texts))
    hidden_dim, num_heads = config["hidden_dim"], config["num_heads"]
    backbone = keras_hub.models.PaliGemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=config["image_size"],
        num_layers=config["num_layers"],
        num_query_heads=num_heads,
        num_key_value_heads=1,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        head_dim=hidden_dim // num_heads,
        vit_patch_size=config["patch_size"],
        vit_num_heads=num_heads,
        vit_hidden_dim=hidden_dim,
        vit_num_layers=config["vit_num_layers"],
        vit_intermediate_dim=2 * hidden_dim,
    )
    return causal_lm_of(backbone, tokenizer, config["sequence_length"])


def _chunk_seed(seed, chunk):
    """The data seed of one chunk of a build: fresh examples every chunk."""
    return int(seed) * 1_000_003 + int(chunk)


def _learning_rate_schedule(steps, learning_rate):
    warmup = min(WARMUP_STEPS, steps // 10)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else learning_rate,
        decay_steps=max(1, steps - warmup),
        alpha=0.05,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def probe_perceptions(causal_lm, num_examples=PROBE_EXAMPLES, seed=0):
    """A base's accuracy on each perception of the pretraining world.

    Scores `causal_lm`, as it is, on fresh generic questions of every
    perception (`keras_pam.datasets.generated.perception_probe`), drawn at
    the model's image and patch size.

    Args:
        causal_lm: `keras_hub.models.PaliGemmaCausalLM`. The model.
        num_examples: int. Examples per perception. Defaults to `64`.
        seed: int. Seeds the examples. Defaults to `0`.

    Returns:
        A dict of perception name to accuracy in `[0, 1]`.

    Example:
    ```python
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(
        shipped_base_preset()
    )
    probe_perceptions(causal_lm, num_examples=16)
    ```
    """
    from keras_pam.datasets import generated
    from keras_pam.scoring import Scorer

    backbone = causal_lm.backbone
    scorer = Scorer(causal_lm)
    return {
        name: round(
            float(
                scorer.score(
                    generated.perception_probe(
                        name,
                        num_examples,
                        backbone.image_size,
                        seed,
                        backbone.vit_patch_size,
                    )
                )
            ),
            4,
        )
        for name in generated.PERCEPTIONS
    }


def _format_duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s"


class _BuildCheckpoint:
    """A build's state between chunks, in a folder beside its preset.

    `state.json` names the folder holding the latest weights and optimizer
    variables; it is replaced in one `os.replace` once that folder is
    complete, so a build killed at any instant resumes from the previous
    chunk or the new one.
    """

    STATE = "state.json"

    def __init__(self, directory):
        self.directory = directory

    def read(self):
        try:
            with open(os.path.join(self.directory, self.STATE)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def write(self, causal_lm, state):
        os.makedirs(self.directory, exist_ok=True)
        name = f"chunk-{state['chunks_done']:05d}"
        folder = os.path.join(self.directory, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        causal_lm.save_weights(os.path.join(folder, "model.weights.h5"))
        optimizer = [v.numpy() for v in causal_lm.optimizer.variables]
        np.savez(
            os.path.join(folder, "optimizer.npz"),
            *[np.asarray(v) for v in optimizer],
        )
        previous = (self.read() or {}).get("folder")
        temporary = os.path.join(self.directory, self.STATE + ".tmp")
        with open(temporary, "w") as f:
            json.dump(dict(state, folder=name), f, indent=2)
        os.replace(temporary, os.path.join(self.directory, self.STATE))
        if previous and previous != name:
            shutil.rmtree(
                os.path.join(self.directory, previous), ignore_errors=True
            )

    def restore(self, causal_lm, state):
        folder = os.path.join(self.directory, state["folder"])
        optimizer = causal_lm.optimizer
        # Built first, so the weights file's optimizer entries load too.
        optimizer.build(causal_lm.trainable_variables)
        causal_lm.load_weights(os.path.join(folder, "model.weights.h5"))
        with np.load(os.path.join(folder, "optimizer.npz")) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(optimizer.variables):
            raise ValueError(
                f"The build checkpoint at {folder} holds {len(values)} "
                f"optimizer variables; this model has "
                f"{len(optimizer.variables)}."
            )
        for variable, value in zip(optimizer.variables, values, strict=True):
            variable.assign(value)


def _check_same_settings(recorded, settings, directory):
    differ = sorted(
        key
        for key in set(recorded) | set(settings)
        if key != "backend" and recorded.get(key) != settings.get(key)
    )
    if differ:
        details = "; ".join(
            f"{key}: started with {recorded.get(key)!r}, now "
            f"{settings.get(key)!r}"
            for key in differ
        )
        raise ValueError(
            f"The build checkpoint at {directory} was started with other "
            f"settings ({details}). Resume it with its own settings, or "
            "delete that folder to start a new build."
        )


def pretrain_tiny_base(
    steps=DEFAULT_STEPS,
    batch_size=32,
    learning_rate=DEFAULT_LEARNING_RATE,
    num_examples=None,
    seed=0,
    verbose=1,
    config=None,
    checkpoint_dir=None,
    chunk_steps=None,
    probe_examples=PROBE_EXAMPLES,
    places_first=DEFAULT_PLACES_FIRST,
):
    """Build the tiny PaliGemma and pretrain all its weights.

    The model is `build_tiny_base_model` (`TINY_BASE_CONFIG`, a tokenizer
    trained on `keras_pam.datasets.vocabulary_texts()`). It is fitted,
    every weight trainable, on `pretraining_mixture` with Adam and a cosine
    decay of the learning rate, in chunks of `chunk_steps` steps, each on
    fresh examples drawn from the chunk's own seed. The chunks that end
    within the first `places_first` of the steps draw places only
    (`PLACES_FIRST_SHARES`): where named objects lie. After every chunk it
    scores each perception (`probe_perceptions`), prints a progress line
    with the time left, and, with `checkpoint_dir`, saves the weights and
    the optimizer state there: a killed build called again with the same
    settings goes on from its last chunk, with the same data and
    schedule. The perception log is the model's `pretraining_log`.

    Args:
        steps: int. Optimizer steps. Defaults to `DEFAULT_STEPS`.
        batch_size: int. Examples per step. Defaults to `32`.
        learning_rate: float. Peak learning rate of Adam. Defaults to
            `DEFAULT_LEARNING_RATE`.
        num_examples: int. Distinct examples per chunk. Defaults to
            `None`: `chunk_steps * batch_size`, each seen once.
        seed: int. Seeds the weights and the data. Defaults to `0`.
        verbose: int. `0` silent, `1` a line per chunk. Defaults to `1`.
        config: dict. Entries of `TINY_BASE_CONFIG` to change. Defaults to
            `None`.
        checkpoint_dir: str. Folder of the build's checkpoint (created).
            Defaults to `None`: no checkpoint.
        chunk_steps: int. Steps between checkpoints and perception probes.
            Defaults to `None`: `min(2000, steps)`.
        probe_examples: int. Examples per perception in each probe; `0`
            skips the probes. Defaults to `64`.
        places_first: float. The share of the steps, in whole chunks,
            that trains on places before the whole mixture. Defaults to
            `DEFAULT_PLACES_FIRST`.

    Returns:
        A pretrained `keras_hub.models.PaliGemmaCausalLM` with its
        preprocessor, with a `pretraining_log` list attribute (per chunk:
        step, loss, seconds and perception accuracies).

    Raises:
        ValueError: `steps` is not a positive int, `places_first` not a
            fraction in [0, 1), or `checkpoint_dir`
            holds a build started with other settings (the message names
            them).

    Example:
    ```python
    causal_lm = pretrain_tiny_base(steps=50, verbose=0, probe_examples=0)
    ```
    """
    import time

    import tensorflow as tf

    from keras_pam import datasets
    from keras_pam.datasets.generated import PLACES_FIRST_SHARES

    settings = _build_settings(
        steps,
        batch_size,
        learning_rate,
        num_examples,
        seed,
        config,
        chunk_steps,
        places_first,
    )
    num_examples, chunk_steps = (
        settings["num_examples"],
        settings["chunk_steps"],
    )
    checkpoint = (
        None if checkpoint_dir is None else _BuildCheckpoint(checkpoint_dir)
    )
    state = checkpoint.read() if checkpoint else None
    if state is not None:
        _check_same_settings(state["settings"], settings, checkpoint_dir)
    keras.utils.set_random_seed(seed)
    causal_lm = build_tiny_base_model(datasets.vocabulary_texts(), config)
    config = dict(TINY_BASE_CONFIG, **(config or {}))
    causal_lm.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=_learning_rate_schedule(steps, learning_rate)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    log, done, elapsed = [], 0, 0.0
    if state is not None:
        checkpoint.restore(causal_lm, state)
        log, done, elapsed = (
            state["log"],
            state["chunks_done"],
            state["seconds"],
        )
        if verbose:
            print(
                f"Resuming the build at step {min(steps, done * chunk_steps)} "
                f"of {steps} from {checkpoint_dir}."
            )
    num_chunks = -(-steps // chunk_steps)
    for chunk in range(done, num_chunks):
        started = time.time()
        chunk_length = min(chunk_steps, steps - chunk * chunk_steps)
        places_only = (chunk + 1) * chunk_steps <= places_first * steps
        examples = datasets.pretraining_mixture(
            num_examples,
            image_size=config["image_size"],
            seed=_chunk_seed(seed, chunk),
            patch_size=config["patch_size"],
            shares=PLACES_FIRST_SHARES if places_only else None,
        )
        # `fit` of a KerasHub task runs its preprocessor on the raw batches.
        dataset = (
            tf.data.Dataset.from_tensor_slices(examples)
            .shuffle(num_examples, seed=_chunk_seed(seed, chunk))
            .repeat()
            .batch(batch_size)
        )
        history = causal_lm.fit(
            dataset,
            epochs=1,
            steps_per_epoch=chunk_length,
            shuffle=False,  # The dataset is shuffled.
            verbose=0,
        )
        step = chunk * chunk_steps + chunk_length
        entry = {"step": step, "loss": float(history.history["loss"][-1])}
        if probe_examples:
            entry["accuracy"] = probe_perceptions(
                causal_lm, probe_examples, seed=_chunk_seed(seed, 0)
            )
        elapsed += time.time() - started
        entry["seconds"] = round(elapsed, 1)
        log.append(entry)
        if checkpoint is not None:
            state = {
                "settings": settings,
                "chunks_done": chunk + 1,
                "seconds": elapsed,
                "log": log,
            }
            checkpoint.write(causal_lm, state)
        if verbose:
            left = elapsed / step * (steps - step)
            accuracy = " ".join(
                f"{k} {v:.2f}" for k, v in entry.get("accuracy", {}).items()
            )
            print(
                f"step {step}/{steps} loss {entry['loss']:.4f} "
                f"{accuracy} | {_format_duration(elapsed)} elapsed, "
                f"ETA {_format_duration(left)}",
                flush=True,
            )
    causal_lm.pretraining_log = log
    causal_lm.pretraining_seconds = elapsed
    return causal_lm


def write_base_preset(causal_lm, directory, settings, command=None):
    """Save a pretrained base as a checksummed preset, atomically.

    The preset is written with `save_to_preset` to a temporary directory
    beside `directory`, with `METADATA_FILE` (settings, final loss, the
    command that built it, library versions and `preset_checksums`), then
    renamed into place: an interrupted write never leaves a half-written
    preset, and an old preset there is replaced only once the new one is
    complete.

    Args:
        causal_lm: `keras_hub.models.PaliGemmaCausalLM`. The base.
        directory: str. The preset directory to write.
        settings: dict. How the base was built (recorded).
        command: str. The command line that built it. Defaults to `None`.

    Returns:
        The metadata dict written.
    """
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(directory)
    temporary = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    try:
        causal_lm.save_to_preset(temporary)
        log = getattr(causal_lm, "pretraining_log", None) or []
        history = getattr(causal_lm, "history", None)
        losses = history.history.get("loss", []) if history else []
        metadata = {
            "settings": settings,
            "loss": log[-1]["loss"]
            if log
            else (losses[-1] if losses else math.nan),
            "command": command,
            "build_seconds": getattr(causal_lm, "pretraining_seconds", None),
            "perception_log": log,
            "versions": {
                "keras": keras.__version__,
                "keras_hub": keras_hub.__version__,
                "backend": keras.backend.backend(),
            },
            "checksums": preset_checksums(temporary),
        }
        with open(os.path.join(temporary, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2)
        _move_into_place(temporary, directory)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return metadata


def tiny_base_preset(
    name=DEFAULT_NAME,
    home=None,
    steps=DEFAULT_STEPS,
    batch_size=32,
    learning_rate=DEFAULT_LEARNING_RATE,
    num_examples=None,
    seed=0,
    overwrite=False,
    verbose=1,
    config=None,
    output=None,
    command=None,
    chunk_steps=None,
    probe_examples=PROBE_EXAMPLES,
    places_first=DEFAULT_PLACES_FIRST,
):
    """A tiny pretrained PaliGemma preset, built once and cached.

    The first call pretrains the model (`pretrain_tiny_base`, a progress
    line per chunk) and saves it with `write_base_preset` to `output`, by
    default `<home>/presets/<name>`; later calls with the same settings
    return that directory at once. A preset there built with other
    settings is rebuilt. The build checkpoints into `<output>.build` after
    every chunk, so a killed build called again goes on where it stopped
    (with other settings it is refused, naming them); the folder is
    removed once the preset is written.
    `keras-pam pretrain` calls this; the base that ships with the package
    (`shipped_base_preset`) was built this way.

    Args:
        name: str. The preset's folder name under `<home>/presets`.
            Defaults to `"tiny_pali_gemma"`.
        home: str. The cache folder. Defaults to `None`: `KERAS_PAM_HOME`,
            else `~/.keras/keras_pam` (see `keras_pam_home`).
        steps: int. Pretraining steps. Defaults to `DEFAULT_STEPS`.
        batch_size: int. Pretraining batch size. Defaults to `32`.
        learning_rate: float. Peak pretraining learning rate. Defaults to
            `DEFAULT_LEARNING_RATE`.
        num_examples: int. Distinct pretraining examples. Defaults to
            `None` (see `pretrain_tiny_base`).
        seed: int. Seeds the build: the same seed gives the same weights.
            Defaults to `0`.
        overwrite: bool. Rebuild even if the preset exists. Defaults to
            `False`.
        verbose: int. `0` silent, `1` messages and a progress bar. Defaults
            to `1`.
        config: dict. Entries of `TINY_BASE_CONFIG` to change. Defaults to
            `None`.
        output: str. The preset directory, instead of
            `<home>/presets/<name>`. Defaults to `None`.
        command: str. The command line to record in the metadata. Defaults
            to `None`.
        chunk_steps: int. Steps between checkpoints and perception probes.
            Defaults to `None` (see `pretrain_tiny_base`).
        probe_examples: int. Examples per perception in each probe.
            Defaults to `64`.
        places_first: float. The share of the steps that trains on places
            before the whole mixture. Defaults to `DEFAULT_PLACES_FIRST`.

    Returns:
        The preset directory, a str to pass to
        `ContinualLearner.from_preset` or
        `keras_hub.models.PaliGemmaCausalLM.from_preset`.

    Example:
    ```python
    preset = tiny_base_preset(name="small_base", steps=20, verbose=0)
    learner = keras_pam.ContinualLearner.from_preset(preset, rank=8)
    ```
    """
    if not isinstance(name, str) or not name or os.sep in name:
        raise ValueError(f"`name` must be a folder name. Received: {name!r}")
    settings = _build_settings(
        steps,
        batch_size,
        learning_rate,
        num_examples,
        seed,
        config,
        chunk_steps,
        places_first,
    )
    num_examples, chunk_steps = (
        settings["num_examples"],
        settings["chunk_steps"],
    )
    if output is None:
        output = os.path.join(keras_pam_home(home), "presets", name)
    directory = os.path.abspath(output)
    if not overwrite and _is_complete(directory):
        if _same_build(_read_metadata(directory), settings):
            return directory
        if verbose:
            print(f"The tiny base at {directory} has other settings: rebuild.")
    if verbose:
        print(
            f"Pretraining the tiny PaliGemma base ({steps} steps) into "
            f"{directory}."
        )
    checkpoint_dir = directory + ".build"
    causal_lm = pretrain_tiny_base(
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        num_examples=num_examples,
        seed=seed,
        verbose=verbose,
        config=config,
        checkpoint_dir=checkpoint_dir,
        chunk_steps=chunk_steps,
        probe_examples=probe_examples,
        places_first=places_first,
    )
    write_base_preset(causal_lm, directory, settings, command=command)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return directory


def quick_tiny_base_preset(home=None, seed=0, verbose=0):
    """The preset directory of the quick tiny base, for smoke tests.

    A smaller model than the shipped base (`QUICK_CONFIG`), pretrained for
    only `QUICK_STEPS` steps (seconds on a CPU) and cached as `QUICK_NAME`:
    its weights are barely trained, so it shows that a pipeline runs end to
    end, not what it measures. The TPU notebooks' smoke mode
    (`KERAS_PAM_SMOKE=1`) uses it. Nothing is downloaded.

    Args:
        home: str. The cache folder. Defaults to `None`: `KERAS_PAM_HOME`,
            else `~/.keras/keras_pam` (see `keras_pam_home`).
        seed: int. Seeds the build. Defaults to `0`.
        verbose: int. `0` silent, `1` messages and a progress bar. Defaults
            to `0`.

    Returns:
        The preset directory, a str to pass to
        `ContinualLearner.from_preset`.

    Example:
    ```python
    preset = quick_tiny_base_preset()
    learner = keras_pam.ContinualLearner.from_preset(preset, rank=4)
    ```
    """
    return tiny_base_preset(
        name=QUICK_NAME,
        home=home,
        steps=QUICK_STEPS,
        seed=seed,
        verbose=verbose,
        config=QUICK_CONFIG,
        probe_examples=0,
    )


def _move_into_place(temporary, directory):
    """Rename `temporary` to `directory`, replacing an old preset there."""
    old = None
    if os.path.lexists(directory):
        old = tempfile.mkdtemp(
            prefix=f".{os.path.basename(directory)}.old.",
            dir=os.path.dirname(directory),
        )
        os.rmdir(old)
        try:
            os.rename(directory, old)
        except FileNotFoundError:
            old = None  # Another process moved it already.
    try:
        os.rename(temporary, directory)
    except OSError:
        # Another build finished first; keep a complete one.
        if not _is_complete(directory):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
