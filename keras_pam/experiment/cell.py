"""One cell of a study: one method on one (order, seed) of the grid
(`run_method`), its suite, recipes, strategy, logs and result file."""

import json
import math
import os
import time

CELL_FILE = "result.json"


# How a study's tasks train (`task_recipe`).
RECIPES = ("testbed", "paper")

# The paper's three benchmarks, as generated analogues, and the order each
# runs by default: CoIN's six image tasks, the extended ten-task sequence,
# and video QA.
BENCHMARKS = {"coin": "order1", "extended": "extended", "video": "video"}


def is_video(settings):
    """Whether a study runs the video benchmark (clips, a video model)."""
    return settings.get("benchmark", "coin") == "video"


def known_orders(settings):
    """The orders a study of this benchmark can run."""
    from keras_pam import datasets

    return datasets.VIDEO_ORDERS if is_video(settings) else datasets.ALL_ORDERS


def known_tasks(settings):
    """The task names a study of this benchmark can run."""
    from keras_pam import datasets

    if is_video(settings):
        return datasets.VIDEO_TASK_NAMES
    return datasets.ALL_TASK_NAMES


def make_study_suite(settings, order, seed, image_size, patch_size):
    """The generated task sequence of one cell, drawn on the base's grid
    (`image_size` and its ViT's `patch_size`)."""
    from keras_pam import datasets

    sizes = dict(
        num_train=settings["num_train"],
        num_test=settings["num_test"],
        image_size=image_size,
        seed=seed,
        tasks=settings["tasks"],
        patch_size=patch_size,
    )
    if is_video(settings):
        return datasets.make_video_suite(
            order=order, num_frames=settings["num_frames"], **sizes
        )
    return datasets.make_suite(order=order, **sizes)


def shared_model(preset, settings):
    """The study's `SharedModel`: one model for every cell (a video model
    of `settings["num_frames"]` frames for the video benchmark)."""
    from keras_pam.learner.shared_model import SharedModel

    video = {"num_frames": settings["num_frames"]} if is_video(settings) else {}
    return SharedModel.get(
        preset, rank=settings["rank"], alpha=settings["alpha"], **video
    )


def task_recipe(task_name, settings):
    """The `keras_pam.TaskRecipe` of a study's task.

    `settings["recipe"]` `"testbed"` trains every task alike: the study's
    epochs and batch size, at the compiled learning rate. `"paper"` trains
    a generated task with the paper's recipe of the CoIN task it stands
    for (`keras_pam.datasets.COIN_ANALOGUES`; Table 4 and PaliGemma's
    cosine schedule), peaking at the study's learning rate. Either splits
    each batch into `settings["gradient_accumulation"]` micro-batches.
    """
    from keras_pam import datasets
    from keras_pam.datasets.task_recipe import TaskRecipe

    accumulation = settings.get("gradient_accumulation", 1)
    if settings.get("recipe", "testbed") == "paper":
        coin_task = paper_task(task_name)
        return datasets.hyperparameters(coin_task).recipe(
            gradient_accumulation_steps=accumulation,
            learning_rate=settings["learning_rate"],
        )
    return TaskRecipe(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        gradient_accumulation_steps=accumulation,
    )


def suite_recipes(strategy, suite, settings):
    """The `keras_pam.TaskRecipe` each task of a cell trains with.

    Each task's own (`task_recipe`), but for a multitask strategy: it
    trains once, at the last task, on the union of every task's training
    set, so that task gets the joint recipe of all of them
    (`TaskRecipe.joint`, each task weighted by its training examples)
    rather than its own. Under `"testbed"` the recipes are all alike and
    the joint one is the same.

    Args:
        strategy: `keras_pam.strategies.Strategy`. The cell's strategy.
        suite: list of `keras_pam.datasets.Task`. The task sequence.
        settings: dict. The cell's settings (see `task_recipe`).

    Returns:
        A list of `TaskRecipe`, one per task of `suite`, in its order.
    """
    from keras_pam.datasets import data
    from keras_pam.datasets.task_recipe import TaskRecipe
    from keras_pam.strategies.multitask import Multitask

    recipes = [task_recipe(task.name, settings) for task in suite]
    if recipes and any(isinstance(s, Multitask) for s in strategy.chain()):
        sizes = [data.num_examples(task.train) for task in suite]
        recipes[-1] = TaskRecipe.joint(recipes, sizes)
    return recipes


def paper_task(task_name):
    """The CoIN task a generated task stands for, or `ValueError`."""
    from keras_pam import datasets

    paper_analogues = {**datasets.COIN_ANALOGUES, **datasets.VIDEO_ANALOGUES}
    analogues = {a: paper for paper, a in paper_analogues.items()}
    if task_name not in analogues:
        raise ValueError(
            f"The task {task_name!r} stands for no task of the paper, so it "
            "has no paper recipe; the tasks that do: "
            f"{', '.join(sorted(analogues))}."
        )
    return analogues[task_name]


def _make_strategy(name, settings, num_tasks):
    """The strategy `name` of a cell, with the study's settings.

    `get_strategy` gives the alignment settings (`p`, `align_every`,
    `reinit`, `scope`, `p_rule`, `parts`) to the methods that align,
    `num_tasks` to O-LoRA, `l2_weight` (in the settings of a run of
    `l2-pull`) to L2Pull and `start` (of a run given `--start`) to the
    merges that take it; the other methods leave them unused.
    """
    from keras_pam.strategies import get_strategy

    return get_strategy(
        name,
        num_tasks=num_tasks,
        l2_weight=settings.get("l2_weight"),
        start=settings.get("start"),
        p=settings["p"],
        align_every=settings["align_every"],
        reinit=settings["reinit"],
        scope=settings["scope"],
        p_rule=settings.get("p_rule", "fixed"),
        # A study recorded before `--align-parts` aligned every part.
        parts=settings.get("align_parts", "all"),
    )


def run_method(method, preset, suite, settings, verbose=0, run_dir=None):
    """Learn `suite` with one method: a fresh run on the study's model.

    The first call builds the model on `preset` (`SharedModel.get`); later
    calls with the same preset, rank and alpha reuse it, with its compiled
    train step and scorer, so a study compiles them once. Each call is a
    new run (its initial adapter drawn from `settings["seed"]`) with the
    same accuracy matrix whatever ran before it. Each task trains with its
    recipe of `suite_recipes` (multitask's one training with the joint
    recipe of every task).

    Args:
        method: str. A name of `keras_pam.strategies.STRATEGY_NAMES`.
        preset: str. The base preset (name or directory).
        suite: list of `keras_pam.datasets.Task`. The task sequence.
        settings: dict. The cell's settings (see `cell_settings`): the
            study's, with the cell's `seed` and `order`, and `log_dir`
            (TensorBoard scalars go to `<log_dir>/<method>/`, none when
            `None` or missing); `track_misalignment`, when true, records
            each task's misalignment curve in its report, every
            `align_every` updates.
        verbose: int. Passed to each task's `fit`. Defaults to `0`.
        run_dir: str. The method's checkpoint folder; when it holds a
            checkpoint, the method continues from its last completed task.
            Defaults to `None` (no checkpoints).

    Returns:
        A `keras_pam.ContinualReport`.
    """
    import keras

    from keras_pam.datasets.grid_world import check_tasks_fit_model
    from keras_pam.learner.compilation import CompileLog
    from keras_pam.learner.compilation import cell_summary
    from keras_pam.runs import run_folder

    label = cell_label(method, settings)
    # Seed before `shared.learner`: seeding clears TensorFlow's kernel
    # cache, and the learner then remakes its tokenizer's model.
    keras.utils.set_random_seed(settings["seed"])
    tests = {task.name: task.test for task in suite}
    # One model per study: its train step and scorer compile once.
    shared = shared_model(preset, settings)
    resuming = run_dir is not None and (
        run_folder.read_config(run_dir) is not None
    )
    compiles = CompileLog().start()
    strategy = _make_strategy(method, settings, len(suite))
    recipes = suite_recipes(strategy, suite, settings)
    learner = shared.learner(
        strategy,
        seed=settings["seed"],
        run_dir=run_dir,
        eval_tasks=tests,  # All registered first: FWT needs them.
        optimizer=keras.optimizers.Adam(
            learning_rate=settings["learning_rate"]
        ),
        p=settings["p"],
        align_every=settings["align_every"],
        reinit=settings["reinit"],
        scope=settings["scope"],
        align_parts=settings.get("align_parts", "all"),
    )
    check_tasks_fit_model(suite, learner.causal_lm.backbone)
    if resuming:
        done = learner.learned_task_names
        print(
            f"[{label}] resumed after {len(done)}/{len(suite)} tasks",
            flush=True,
        )
    log_dir = settings.get("log_dir")
    if log_dir is not None:
        log_dir = os.path.join(log_dir, _safe_name(method))
    rows = None if log_dir is None else _accuracy_writer(log_dir, learner)
    for i, (task, recipe) in enumerate(zip(suite, recipes), start=1):
        if task.name in learner.learned_task_names:
            continue
        report = learner.learn_task(
            task.train,
            name=task.name,
            recipe=recipe,
            seed=settings["seed"] + i,
            verbose=verbose,
            callbacks=_training_logs(log_dir, i, task.name),
            track_misalignment=_tracking(settings),
        )
        if rows is not None:
            _log_accuracy_row(rows, learner.evaluate_all(), i)
        if not verbose:
            print(f"[{label} {i}/{len(suite)}] {report.summary()}", flush=True)
    if rows is not None:
        rows.on_train_end()  # Flushes and closes the writer.
    report = learner.evaluate_all()
    compiles.stop()
    print(f"[{label}] {cell_summary(compiles, shared.compile_log)}", flush=True)
    return report


def _tracking(settings):
    """`learn_task`'s `track_misalignment` of a cell: every method is
    measured every `align_every` updates, on one grid, so that PAM's
    points fall right before its alignments and the others' beside
    them."""
    if not settings.get("track_misalignment"):
        return False
    return settings["align_every"]


def cell_label(method, settings):
    """`"pam order1 seed1"`: a method on the cell of `settings`."""
    parts = [method]
    if settings.get("order") is not None:
        parts.append(str(settings["order"]))
    if settings.get("seed") is not None:
        parts.append(f"seed{settings['seed']}")
    return " ".join(parts)


def _tensorboard(log_dir, **kwargs):
    import keras

    return keras.callbacks.TensorBoard(
        log_dir, write_graph=False, profile_batch=0, **kwargs
    )


def _training_logs(log_dir, index, name):
    """The TensorBoard callback of task `index`'s `fit`, or none."""
    if log_dir is None:
        return []
    folder = os.path.join(log_dir, f"task{index}_{_safe_name(name)}")
    return [_tensorboard(folder, update_freq="batch")]


def _accuracy_writer(log_dir, learner):
    """A TensorBoard callback that writes the accuracy row of each step."""
    writer = _tensorboard(os.path.join(log_dir, "accuracy"))
    writer.set_model(learner)
    return writer


def _log_accuracy_row(writer, report, step):
    """Write the last row of `report`'s matrix as scalars at `step`."""
    row = report.matrix[-1]
    logs = {
        f"accuracy/{name}": float(value)
        for name, value in zip(report.eval_task_names, row)
        if not math.isnan(value)
    }
    # TensorBoard writes `epoch_<name>` scalars at step `step`.
    writer.on_epoch_end(step, logs=logs)


def _safe_name(method):
    return "".join(c if c.isalnum() else "_" for c in method)


def _run_cell(method, preset, suite, cell, verbose, run_dir):
    """One method on one cell, or its saved result if it finished before.

    Returns the cell's JSON-able result: `order`, `seed`, `method`,
    `seconds` and the `ContinualReport` as a dict.
    """
    from keras_pam.evaluation import report as report_lib
    from keras_pam.runs import checkpoint

    label = cell_label(method, cell)
    path = os.path.join(run_dir, CELL_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            result = json.load(f)
        print(f"[{label}] done before: {path}", flush=True)
        return result
    start = time.time()
    report = run_method(method, preset, suite, cell, verbose, run_dir)
    seconds = time.time() - start
    result = {
        "order": cell["order"],
        "seed": cell["seed"],
        "method": method,
        "seconds": seconds,
        **report.to_dict(),
    }
    result = json.loads(json.dumps(report_lib._jsonable(result)))
    checkpoint.write_atomic(path, json.dumps(result, indent=1))
    print(f"[{label}] done in {seconds:.1f}s", flush=True)
    return result
