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

from keras_pam.models.tiny_base_pretraining import _BuildCheckpoint  # noqa: F401 (old path)
from keras_pam.models.tiny_base_pretraining import build_tiny_base_model  # noqa: F401 (old path)
from keras_pam.models.tiny_base_pretraining import pretrain_tiny_base
from keras_pam.models.tiny_base_pretraining import probe_perceptions  # noqa: F401 (old path)
from keras_pam.models.tiny_base_settings import _PRESET_FILES
from keras_pam.models.tiny_base_settings import DEFAULT_CHUNK_STEPS  # noqa: F401 (old path)
from keras_pam.models.tiny_base_settings import DEFAULT_LEARNING_RATE
from keras_pam.models.tiny_base_settings import DEFAULT_NAME
from keras_pam.models.tiny_base_settings import DEFAULT_PLACES_FIRST
from keras_pam.models.tiny_base_settings import DEFAULT_STEPS
from keras_pam.models.tiny_base_settings import METADATA_FILE
from keras_pam.models.tiny_base_settings import PROBE_EXAMPLES
from keras_pam.models.tiny_base_settings import QUICK_CONFIG
from keras_pam.models.tiny_base_settings import QUICK_NAME
from keras_pam.models.tiny_base_settings import QUICK_STEPS
from keras_pam.models.tiny_base_settings import TINY_BASE_CONFIG  # noqa: F401 (old path)
from keras_pam.models.tiny_base_settings import WARMUP_STEPS  # noqa: F401 (old path)
from keras_pam.models.tiny_base_settings import _build_settings

SHIPPED_PRESET = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "presets", DEFAULT_NAME
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
