"""`RunFolder`: a run's folder of configuration, checkpoints and backups.

A run folder holds `config.json` (the learner's settings; a folder of
another configuration is refused), the committed checkpoints of
`keras_pam.runs.checkpoint` (one after every task) and `task_backup/`, the
temporary adapter of the task in progress after each of its epochs
(`keras_pam.runs.task_backup`), removed when the task's checkpoint
commits. The learner's checkpoint and `resume` methods that use the folder
are `keras_pam.learner.run_folder_mixin.RunFolderMixin`'s.

The folder is a local path or a URL of any file system `tf.io.gfile`
reaches, such as `gs://bucket/runs/pam` on a TPU VM, so a pre-empted VM
keeps its run; a checkpoint commits atomically there too (see
`keras_pam.runs.checkpoint`). A folder that cannot be reached (an unknown URL
scheme, no credentials or network, a file where a folder should be) is
refused with `UnreachableRunFolderError` when it is opened, before any
training.

On several hosts only process 0 writes the folder
(`keras_pam.distribution.processes`), and every process waits at a barrier
after each write, so a checkpoint is complete before any process goes on;
every process reads it on resume, so the folder must be one they all
reach (a `gs://` URL or a shared disk).
"""

import json
import os
import tempfile

import keras
import tensorflow as tf

from keras_pam.distribution import processes
from keras_pam.merging.training_settings import LEARNER_ARGUMENTS
from keras_pam.merging.training_settings import AlignmentConfig
from keras_pam.merging.training_settings import upgrade_recorded
from keras_pam.runs import checkpoint
from keras_pam.runs.run_record import RunRecord  # noqa: F401 (old path)
from keras_pam.runs.task_backup import TaskBackup
from keras_pam.runs.task_backup import load_task_backup
from keras_pam.strategies import Strategy
from keras_pam.strategies import parse_name
from keras_pam.strategies import strategy_from_config

CONFIG = "config.json"
TASK_BACKUP = "task_backup"
# The learner settings that describe the model rather than the run: a
# learner reused for a resumed run must have the run's.
MODEL_KEYS = (
    "rank",
    "alpha",
    "target_layer_names",
    "eval_batch_size",
    "max_answer_tokens",
    "quantize",
    "num_frames",
)


class UnreachableRunFolderError(OSError):
    """A run folder that cannot be reached or made."""


def _unreachable(path, error):
    """The `UnreachableRunFolderError` for `path`, with what to do."""
    path = os.fspath(path)
    scheme = path.split("://")[0] if "://" in path else None
    if isinstance(error, tf.errors.UnimplementedError):
        advice = (
            f"`tf.io.gfile` has no file system for `{scheme}://` URLs. Give a "
            "local path, or a URL TensorFlow reaches (`gs://bucket/run` for "
            "Google Cloud Storage)."
        )
    elif scheme == "gs":
        advice = (
            "Check that the bucket exists and that this machine has network "
            "access and credentials that may write to it (a TPU VM's "
            "service account with Storage access, or `gcloud auth "
            "application-default login`)."
        )
    else:
        advice = (
            "Check that its parent folders exist or can be made, that no "
            "file stands where a folder should, and that it is writable."
        )
    message = getattr(error, "message", None) or str(error)
    return UnreachableRunFolderError(
        f"The run folder {path!r} cannot be reached: {message}. {advice}"
    )


def _reach(path, make):
    """Check that the run folder `path` can be reached, and make it if
    `make`; raise `UnreachableRunFolderError` if not."""
    try:
        if checkpoint.exists(path):
            if not checkpoint.isdir(path):
                raise _unreachable(
                    path, FileExistsError("a file stands there, not a folder")
                )
        elif make:
            checkpoint.makedirs(path)
    except (tf.errors.OpError, OSError) as error:
        if isinstance(error, UnreachableRunFolderError):
            raise
        raise _unreachable(path, error) from None


def read_config(path):
    """A run folder's `config.json`, or `None` if it has none, under
    today's setting names (`upgrade_config`)."""
    path = os.path.join(path, CONFIG)
    if not checkpoint.exists(path):
        return None
    return upgrade_config(json.loads(checkpoint.read_bytes(path)))


def upgrade_config(config):
    """A recorded run configuration under today's setting names.

    A folder written before a setting was renamed (PAM's `every`, now
    `align_every`, in its recorded strategy config) resumes as it is: the
    file is not rewritten, and the settings are compared and rebuilt
    under their new names. A PAM recorded before its `p_rule` existed
    reads as `p_rule="fixed"`, what it ran; a learner's folder written
    before `align_parts` existed aligned every part: it reads as `"all"`.
    """
    config = upgrade_recorded(config)
    if "align_every" in config:
        config.setdefault("align_parts", "all")
    if isinstance(config.get("strategy"), dict):
        config["strategy"] = _upgrade_strategy_entry(config["strategy"])
    return config


def _upgrade_strategy_entry(entry):
    """A recorded `{"name": ..., "config": ...}` strategy entry, and the
    inner one a wrapper's config holds, under today's setting names."""
    if not isinstance(entry.get("config"), dict):
        return entry
    config = upgrade_recorded(entry["config"])
    if entry.get("name") == "pam":
        # Recorded before PAM had rules for `p`: it used its fixed `p`.
        config.setdefault("p_rule", "fixed")
    if isinstance(config.get("inner"), dict):
        config["inner"] = _upgrade_strategy_entry(config["inner"])
    return {**entry, "config": config}


def save_adapter(state, path, backbone):
    """`state.save(path, backbone)` (a `.lora.h5` file, written with h5py)
    for a path on any file system: one that is not local is written to a
    local temporary file and copied."""
    if checkpoint.is_local(path):
        state.save(checkpoint.local_path(path), backbone)
        return
    with tempfile.TemporaryDirectory() as local:
        name = os.path.join(local, os.path.basename(path))
        state.save(name, backbone)
        checkpoint.copy_file(name, path)


def _barrier(path, what):
    # The same name on every process: the folder's path and the step.
    processes.barrier(f"keras_pam run folder {path}: {what}")


class RunFolder:
    """A run folder adopted by a learner with this configuration.

    Args:
        path: str. The folder, a local path or a `tf.io.gfile` URL such as
            `gs://bucket/runs/pam`; made if missing.
        config: dict. The learner's run configuration (JSON values). A
            folder with another `config.json` is refused.

    Raises:
        UnreachableRunFolderError: when the folder cannot be reached or
            made.
    """

    def __init__(self, path, config):
        path = os.fspath(path)
        chief = processes.is_chief()
        _reach(path, make=chief)
        existing = read_config(path)
        differing = (
            [] if existing is None else differing_settings(existing, config)
        )
        if differing:
            raise ValueError(
                f"The run folder {path!r} belongs to another "
                f"configuration (differing: {differing}). Resume it with "
                "the same settings (`ContinualLearner.resume`) or choose "
                "a new folder."
            )
        if existing is None and chief:
            checkpoint.write_atomic(
                os.path.join(path, CONFIG), json.dumps(config, indent=1)
            )
        # Every process, whatever it found: they all reach each barrier.
        _barrier(path, "open")
        self.path = path

    @property
    def backup_dir(self):
        return os.path.join(self.path, TASK_BACKUP)

    def task_backup(self, task_name):
        """The latest epoch backup of `task_name`, or `None`."""
        return load_task_backup(self.backup_dir, task_name)

    def backup_callback(self, task_name, callbacks, history, restore):
        """The `TaskBackup` callback of a task's `fit`."""
        return TaskBackup(
            self.backup_dir, task_name, callbacks, history, restore
        )

    def commit(self, index, tree, global_state, backbone, evaluation=None):
        """Commit the checkpoint after task `index`; drop the task backup.

        Process 0 writes; every process waits until it has.

        Args:
            index: int. The number of learned tasks.
            tree: dict. The state tree (`keras_pam.checkpoint.save_tree`).
            global_state: `AdapterState`. Also written as `global.lora.h5`
                (KerasHub's format, for users).
            backbone: the model's backbone, for the `.lora.h5` files.
            evaluation: `AdapterState`. The adapter the accuracy matrix
                scores when the task is not known, written as
                `evaluation.lora.h5` when it is not the global adapter
                (MagMax's merge). Defaults to `None`.
        """

        def write(folder):
            checkpoint.save_tree(folder, tree)
            save_adapter(
                global_state, os.path.join(folder, "global.lora.h5"), backbone
            )
            if evaluation is not None and evaluation is not global_state:
                save_adapter(
                    evaluation,
                    os.path.join(folder, "evaluation.lora.h5"),
                    backbone,
                )

        name = f"task_{index:04d}"
        if processes.is_chief():
            checkpoint.commit(self.path, name, write)
            checkpoint.remove_tree(self.backup_dir)
        _barrier(self.path, name)

    @staticmethod
    def read(path):
        """A run folder's configuration and its latest checkpoint's tree
        (`None` before the first task), verified."""
        _reach(path, make=False)
        config = read_config(path)
        if config is None:
            raise ValueError(
                f"{path!r} is not a run folder: it has no {CONFIG}."
            )
        folder = checkpoint.latest(path)
        tree = None
        if folder is not None:
            checkpoint.verify(folder)
            tree = checkpoint.load_tree(folder)
        return config, tree


def differing_settings(recorded, config):
    """The settings in which `config` differs from a folder's recorded one.

    A strategy setting that the recorded configuration lacks is no
    difference: the folder was written before the strategy recorded it
    (a wrapper's inner method, `PostAlign`'s merge).
    """
    differing = []
    for key in sorted(set(recorded) | set(config)):
        old, new = recorded.get(key), config.get(key)
        if key == "strategy" and isinstance(old, dict) and new:
            recorded_keys = old.get("config", {})
            new = dict(new)
            new["config"] = {
                k: v for k, v in new["config"].items() if k in recorded_keys
            }
        if old != new:
            differing.append(key)
    return differing


def run_configuration(learner):
    """The learner's settings as its run folder records them (JSON)."""
    config = learner.get_config()
    for key in ("causal_lm", "name", "trainable", "dtype", "run_dir"):
        config.pop(key, None)
    if config.get("seed") is None:
        # Run folders written before `seed` existed stay resumable.
        config.pop("seed", None)
    config["strategy"] = {
        "name": learner.strategy.name,
        "config": learner.strategy.get_config(),
    }
    config["preset"] = learner.preset
    if learner.num_frames is not None:
        # A video model made from an image preset is rebuilt with it.
        config["num_frames"] = learner.num_frames
    return json.loads(json.dumps(config, default=str))


def _saved_strategy(config):
    """The strategy of a run, rebuilt from its recorded name and config."""
    saved = config["strategy"]
    try:
        parse_name(saved["name"])
    except ValueError:
        raise ValueError(
            f"The run used the strategy {saved['name']!r}, which is not "
            "built by name: pass it as `strategy`."
        ) from None
    alignment = AlignmentConfig(
        p=config["p"],
        align_every=config["align_every"],
        reinit=config["reinit"],
        scope=config["scope"],
        align_first_task=config["align_first_task"],
        reset_moments=config["reset_moments"],
        # A learner saved before `align_parts` existed aligned all parts.
        parts=config.get("align_parts", "all"),
    )
    return strategy_from_config(saved, alignment)


def learner_arguments(config, strategy=None):
    """The learner's keyword arguments and preset from a run's config.

    A run whose `align` or `merge` are not the defaults built its strategy
    from them, and is rebuilt the same way; any other run's strategy is
    `strategy`, or is rebuilt from its recorded name and config.

    Args:
        config: dict. The run's `config.json`.
        strategy: `Strategy`. The run's strategy, when it was not built by
            name. Defaults to `None`.

    Returns:
        A tuple `(kwargs, preset)`.
    """
    kwargs = dict(config)
    preset = kwargs.pop("preset")
    kwargs.pop("strategy")
    if isinstance(kwargs.get("merge"), dict):
        kwargs["merge"] = keras.saving.deserialize_keras_object(kwargs["merge"])
    built_by_shim = (
        kwargs.get("align", True) is not True
        or kwargs.get("merge", "average") != "average"
    )
    if strategy is None and not built_by_shim:
        strategy = _saved_strategy(config)
    if strategy is not None:
        kwargs["strategy"] = strategy
    return kwargs, preset


def split_recorded_alignment(kwargs):
    """Pop the alignment settings from `kwargs` when they go with a
    strategy object, and return them.

    A learner takes a strategy object's own alignment settings and
    refuses others given beside it; a run folder written before it did
    may record others than its strategy's. `resume` builds the learner
    without them and then sets them as recorded, so that its configuration
    is the folder's.

    Args:
        kwargs: dict. The learner's keyword arguments (`learner_arguments`).

    Returns:
        A dict of the popped settings, by the learner's argument names.
    """
    if not isinstance(kwargs.get("strategy"), Strategy):
        return {}
    return {k: kwargs.pop(k) for k in LEARNER_ARGUMENTS if k in kwargs}


def check_same_model(kwargs, preset, learner_config, learner_preset, path):
    """Refuse to continue a run on a learner of another model; pops the
    model settings from `kwargs`."""
    differing = [
        key
        for key in MODEL_KEYS
        if kwargs.pop(key, None) != learner_config.get(key)
    ]
    if preset != learner_preset:
        differing.append("preset")
    if differing:
        raise ValueError(
            f"The run in {path!r} used another model than "
            f"`learner` (differing: {differing})."
        )
