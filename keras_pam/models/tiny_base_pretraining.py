"""Pretraining the tiny base: the model, the chunked training on the
generated mixture, checkpoints of a build, the perception probe."""

import json
import os
import shutil

import keras
import keras_hub
import numpy as np

from keras_pam.models.tiny_base_settings import DEFAULT_LEARNING_RATE
from keras_pam.models.tiny_base_settings import DEFAULT_PLACES_FIRST
from keras_pam.models.tiny_base_settings import DEFAULT_STEPS
from keras_pam.models.tiny_base_settings import PROBE_EXAMPLES
from keras_pam.models.tiny_base_settings import TINY_BASE_CONFIG
from keras_pam.models.tiny_base_settings import WARMUP_STEPS
from keras_pam.models.tiny_base_settings import _build_settings


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
    from keras_pam.evaluation.scoring import Scorer

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
    from keras_pam.datasets.generated_pretraining import PLACES_FIRST_SHARES

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
