"""`RunFolder`: a run's folder of configuration, checkpoints and backups.

A run folder holds `config.json` (the learner's settings; a folder of
another configuration is refused), the committed checkpoints of
`keras_pam.checkpoint` (one after every task) and `task_backup/`, the
temporary adapter of the task in progress after each of its epochs
(`keras_pam.task_backup`), removed when the task's checkpoint commits.
"""

import json
import os
import shutil

import keras

from keras_pam import checkpoint
from keras_pam.task_backup import TaskBackup
from keras_pam.task_backup import load_task_backup

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
)


def read_config(path):
    """A run folder's `config.json`, or `None` if it has none."""
    path = os.path.join(path, CONFIG)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


class RunFolder:
    """A run folder adopted by a learner with this configuration.

    Args:
        path: str. The folder; made if missing.
        config: dict. The learner's run configuration (JSON values). A
            folder with another `config.json` is refused.
    """

    def __init__(self, path, config):
        existing = read_config(path)
        if existing is not None and existing != config:
            differing = sorted(
                k
                for k in set(existing) | set(config)
                if existing.get(k) != config.get(k)
            )
            raise ValueError(
                f"The run folder {path!r} belongs to another "
                f"configuration (differing: {differing}). Resume it with "
                "the same settings (`ContinualLearner.resume`) or choose "
                "a new folder."
            )
        if existing is None:
            os.makedirs(path, exist_ok=True)
            checkpoint.write_atomic(
                os.path.join(path, CONFIG), json.dumps(config, indent=1)
            )
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

    def commit(self, index, tree, global_state, backbone):
        """Commit the checkpoint after task `index`; drop the task backup.

        Args:
            index: int. The number of learned tasks.
            tree: dict. The state tree (`keras_pam.checkpoint.save_tree`).
            global_state: `AdapterState`. Also written as `global.lora.h5`
                (KerasHub's format, for users).
            backbone: the model's backbone, for the `.lora.h5` file.
        """

        def write(folder):
            checkpoint.save_tree(folder, tree)
            global_state.save(os.path.join(folder, "global.lora.h5"), backbone)

        checkpoint.commit(self.path, f"task_{index:04d}", write)
        shutil.rmtree(self.backup_dir, ignore_errors=True)

    @staticmethod
    def read(path):
        """A run folder's configuration and its latest checkpoint's tree
        (`None` before the first task), verified."""
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


def learner_arguments(config, build_strategy):
    """The learner's keyword arguments and preset from a run's config.

    Args:
        config: dict. The run's `config.json`.
        build_strategy: callable. From the saved strategy entry
            (`{"name", "config"}`) and the config, the strategy to give.

    Returns:
        A tuple `(kwargs, preset)`.
    """
    kwargs = dict(config)
    preset = kwargs.pop("preset")
    saved_strategy = kwargs.pop("strategy")
    if isinstance(kwargs.get("merge"), dict):
        kwargs["merge"] = keras.saving.deserialize_keras_object(kwargs["merge"])
    kwargs["strategy"] = build_strategy(saved_strategy, config)
    return kwargs, preset


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
