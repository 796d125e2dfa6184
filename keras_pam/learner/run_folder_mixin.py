"""`RunFolderMixin`: the learner's `save_checkpoint` and `resume`, on a
`keras_pam.runs.run_folder.RunFolder`."""

import keras

from keras_pam.learner.training import same_optimizer
from keras_pam.runs.run_folder import RunFolder
from keras_pam.runs.run_folder import check_same_model
from keras_pam.runs.run_folder import learner_arguments
from keras_pam.runs.run_folder import run_configuration
from keras_pam.runs.run_folder import split_recorded_alignment
from keras_pam.runs.run_record import RunRecord


class RunFolderMixin:
    """The run-folder methods of `keras_pam.ContinualLearner`: where it
    checkpoints, the checkpoint after each task, and `resume`."""

    @classmethod
    def from_preset(cls, preset, load_weights=True, dtype=None, **kwargs):
        # The run folder records the preset, so it opens once that is set.
        run_dir = kwargs.pop("run_dir", None)
        learner = super().from_preset(preset, load_weights, dtype, **kwargs)
        learner.open_run_dir(run_dir)
        return learner

    @property
    def run_dir(self):
        """The run folder checkpointed into, or `None`."""
        return None if self.run_folder is None else self.run_folder.path

    def open_run_dir(self, run_dir):
        """Checkpoint into `run_dir` from now on (`None`: nowhere); a
        folder written by another configuration is refused."""
        self.run_folder = None
        if run_dir is not None:
            self.run_folder = RunFolder(run_dir, run_configuration(self))

    def save_checkpoint(self):
        """Write the run's state after the last task into `run_dir`.

        `learn_task` calls it after every task when the learner has a
        `run_dir`; the write is atomic (see `keras_pam.checkpoint`).
        """
        if self.run_folder is None:
            raise ValueError("The learner has no `run_dir` to checkpoint to.")
        tree = {
            **self.record.to_tree(self.eval_tasks),
            "initial": self.initial_state,
            "global": self.global_state,
            "strategy": self.strategy.get_state(),
            "optimizer": keras.optimizers.serialize(self.optimizer),
        }
        self.run_folder.commit(
            len(self.record.learned),
            tree,
            self.global_state,
            self.causal_lm.backbone,
            evaluation=self.evaluation_adapter(),
        )

    def _restore(self, tree):
        self.initial_state = tree["initial"]
        self.global_state = tree["global"]
        self.global_state.assign_to(self)
        self.record = RunRecord.from_tree(tree)
        self.strategy.set_state(tree["strategy"])
        optimizer = keras.optimizers.deserialize(tree["optimizer"])
        if not same_optimizer(self.optimizer, optimizer):
            self.compile(optimizer=optimizer)

    @classmethod
    def resume(
        cls,
        run_dir,
        eval_tasks=None,
        causal_lm=None,
        strategy=None,
        learner=None,
    ):
        """Continue a run from its last completed task.

        Args:
            run_dir: str. The run folder given as `run_dir` before.
            eval_tasks: dict of name to split. The evaluation tasks the run
                had registered (data is not checkpointed); all are needed.
                Defaults to `None`.
            causal_lm: The base model, when the run did not start from
                `from_preset` (which records the preset). Defaults to `None`.
            strategy: `Strategy`. The run's strategy, needed when the
                registry cannot rebuild it from its recorded name and config
                (a method of your own). Defaults to `None`.
            learner: `ContinualLearner`. Continue the run on this learner
                (`reset` to the run's settings), keeping its compiled steps;
                its model settings and preset must be the run's. Defaults to
                `None`.

        Returns:
            A `ContinualLearner` holding the run's state: learn the tasks
            not in `learned_task_names` to continue. A task killed mid-way
            restarts from its last finished epoch.

        Example:
        ```python
        learner = ContinualLearner.resume("runs/pam", eval_tasks=tests)
        for task in suite:
            if task.name not in learner.learned_task_names:
                learner.learn_task(task.train, name=task.name, epochs=4)
        ```
        """
        config, tree = RunFolder.read(run_dir)
        names = tree["eval_task_names"] if tree else []
        eval_tasks = dict(eval_tasks or {})
        missing = [n for n in names if n not in eval_tasks]
        if missing:
            raise ValueError(
                f"`eval_tasks` lacks the run's evaluation tasks {missing}."
            )
        kwargs, preset = learner_arguments(config, strategy)
        recorded = split_recorded_alignment(kwargs)
        if learner is not None:
            check_same_model(
                kwargs,
                preset,
                run_configuration(learner),
                learner.preset,
                run_dir,
            )
            learner.reset(seed=kwargs.pop("seed", None), **kwargs)
        elif causal_lm is None:
            if preset is None:
                raise ValueError(
                    f"The run in {run_dir!r} did not start from a preset: "
                    "pass its `causal_lm`."
                )
            learner = cls.from_preset(preset, **kwargs)
        else:
            kwargs.pop("num_frames", None)  # The given model's own.
            learner = cls(causal_lm, **kwargs)
            learner.preset = preset
        for name, value in recorded.items():
            setattr(learner, name, value)
        learner.open_run_dir(run_dir)
        for name in names + [n for n in eval_tasks if n not in names]:
            learner.add_eval_task(name, eval_tasks[name])
        if tree is not None:
            learner._restore(tree)
        return learner
