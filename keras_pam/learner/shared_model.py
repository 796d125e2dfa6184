"""`SharedModel`: one base model and its compiled steps for a whole study."""

import json

import keras

from keras_pam.learner.continual_learner import ContinualLearner
from keras_pam.learner.training import same_optimizer
from keras_pam.runs import run_folder
from keras_pam.strategies import adds_weights


class SharedModel:
    """One base model and its compiled steps, shared by the runs of a study.

    A study runs many cells (methods x seeds x orders) on the same base.
    A new `ContinualLearner` per cell traces and compiles its train step
    and its scorer's decoders again (about 25 s per cell on two CPU
    cores). `SharedModel` builds one learner and `reset`s it for every
    cell: each train step (`train_step_key`: fine-tuning and averaging
    share one, PAM has its own) and each decoder is compiled once per
    study. A cell's accuracy matrix is the same whether it runs alone or
    after others (its initial adapter is drawn from its seed, see
    `initial_adapter`).
    Strategies that add weights to the model (MoELoRA) get a new learner
    per cell.

    `compile_log` (a `keras_pam.compilation.CompileLog`) counts the
    compiles since the shared model was created.

    Args:
        preset: str. The base preset (name or directory).
        load_weights: bool. As in `ContinualLearner.from_preset`. Defaults
            to `True`.
        dtype: str. As in `ContinualLearner.from_preset`. Defaults to
            `None`.
        **model_kwargs: the model settings every cell shares: `rank`,
            `alpha`, `target_layer_names`, `eval_batch_size`,
            `max_answer_tokens`, `quantize`.

    Example:
    ```python
    shared = SharedModel.get(preset, rank=8)
    for seed in (0, 1, 2):
        for method in ("finetune", "average", "pam"):
            learner = shared.learner(method, seed=seed, eval_tasks=tests)
            for task in suite:
                learner.learn_task(task.train, name=task.name)
            reports[method, seed] = learner.evaluate_all()
    print(shared.compile_log.summary())
    ```
    """

    _instances = {}

    def __init__(self, preset, load_weights=True, dtype=None, **model_kwargs):
        from keras_pam.learner.compilation import CompileLog

        self.preset = preset
        self.load_weights = load_weights
        self.dtype = dtype
        self.model_kwargs = dict(model_kwargs)
        self.compile_log = CompileLog().start()
        self._learner = None

    @classmethod
    def get(cls, preset, **kwargs):
        """The process's `SharedModel` for these arguments (made once)."""
        key = (
            keras.backend.backend(),
            preset,
            json.dumps(kwargs, sort_keys=True, default=str),
        )
        if key not in cls._instances:
            cls._instances[key] = cls(preset, **kwargs)
        return cls._instances[key]

    @classmethod
    def clear(cls):
        """Forget the process's shared models (their memory is freed)."""
        for shared in cls._instances.values():
            shared.compile_log.stop()
        cls._instances.clear()

    def _new_learner(self, **kwargs):
        return ContinualLearner.from_preset(
            self.preset,
            load_weights=self.load_weights,
            dtype=self.dtype,
            **self.model_kwargs,
            **kwargs,
        )

    def learner(
        self,
        strategy,
        seed=None,
        run_dir=None,
        eval_tasks=None,
        optimizer=None,
        **settings,
    ):
        """The learner of one cell: a fresh run on the shared model.

        When `run_dir` holds a run (its `config.json`), the run is resumed
        with its own settings (`ContinualLearner.resume`); otherwise a new
        run starts there.

        Args:
            strategy: str or `Strategy`. The cell's method.
            seed: int. Seeds the initial adapter. Defaults to `None` (the
                adapter the shared model was built with).
            run_dir: str. The cell's checkpoint folder. Defaults to `None`.
            eval_tasks: dict of name to test split, registered in order
                (all of them before learning: FWT needs them). Defaults to
                `None`.
            optimizer: `keras.optimizers.Optimizer`. Defaults to `None`
                (the learner's default, Adam at `5e-4`).
            **settings: the strategy settings of `ContinualLearner.reset`
                (`p`, `align_every`, `reinit`, `scope`, ...).

        Returns:
            A `ContinualLearner`. It is the one object of the shared model:
            use it until the next call.
        """
        eval_tasks = dict(eval_tasks or {})
        resuming = run_dir is not None and (
            run_folder.read_config(run_dir) is not None
        )
        if adds_weights(strategy):
            if resuming:
                return ContinualLearner.resume(run_dir, eval_tasks=eval_tasks)
            learner = self._new_learner(
                strategy=strategy, seed=seed, run_dir=run_dir, **settings
            )
            if optimizer is not None:
                learner.compile(optimizer=optimizer)
        else:
            if self._learner is None:
                self._learner = self._new_learner()
            learner = self._learner
            if resuming:
                if optimizer is not None and not same_optimizer(
                    learner.optimizer, optimizer
                ):
                    # The run's own, for a task killed before any backup;
                    # the checkpoint's optimizer replaces it if it differs.
                    learner.compile(optimizer=optimizer)
                return ContinualLearner.resume(
                    run_dir, eval_tasks=eval_tasks, learner=learner
                )
            learner.reset(
                strategy=strategy,
                seed=seed,
                run_dir=run_dir,
                optimizer=optimizer,
                **settings,
            )
        for name, data in eval_tasks.items():
            learner.add_eval_task(name, data)
        return learner
