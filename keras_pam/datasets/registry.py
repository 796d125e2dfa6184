"""Task container, split validation and the paper's task registry.

`PAPER_TASKS` holds the per-task fine-tuning hyper-parameters of the PAM
paper's Table 4 (Appendix A). The paper took them from the PaliGemma transfer
recipes (Beyer et al., 2024) and changed only the learning rate, which is
`5e-4` for every task (see `PAPER_LEARNING_RATE`).
"""

import collections.abc
import dataclasses

import numpy as np

from keras_pam.datasets.data import as_examples
from keras_pam.merging.training_settings import PAPER

# The paper's settings for a real PaliGemma (`keras_pam.PAPER`).
PAPER_LEARNING_RATE = PAPER.learning_rate
PAPER_LORA_RANK = PAPER.rank

METRICS = ("vqa", "exact")


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """One task of a continual-learning sequence.

    A split is a dict of numpy arrays with the same leading length N:
    `"images"` (uint8, `(N, S, S, 3)`), `"prompts"` (object array of str,
    each ending with `"\\n"`), `"responses"` (object array of str) and,
    for multi-annotator VQA data, `"answers"` (object array of lists of str).

    Args:
        name: str. The task name.
        train: dict. The training split.
        test: dict. The test split.
        metric: str. `"vqa"` (VQA soft accuracy over `"answers"`, which
            the test split must then have) or `"exact"` (exact match with
            `"responses"` after normalisation).
        description: str. A short human-readable description. Defaults to
            `""`.
        image_size: int. The image side the task was drawn at, or `None`
            when unknown (loaded data). Defaults to `None`.
        patch_size: int. The ViT patch side the task was drawn for (its
            objects lie whole inside one patch; see
            `keras_pam.datasets.grid_world`), or `None` when it was not
            drawn for one. Defaults to `None`.

    Raises:
        ValueError: if `metric` is unknown, or is `"vqa"` while the test
            split has no `"answers"`.

    Example:

    ```python
    import numpy as np
    from keras_pam.datasets import Task

    split = {
        "images": np.zeros((2, 8, 8, 3), "uint8"),
        "prompts": np.array(["answer en what\\n"] * 2, dtype=object),
        "responses": np.array(["red", "blue"], dtype=object),
    }
    task = Task("toy", train=split, test=split, metric="exact")
    print(task.num_train, task.num_test)
    ```
    """

    name: str
    train: dict = dataclasses.field(repr=False)
    test: dict = dataclasses.field(repr=False)
    metric: str
    description: str = ""
    image_size: int | None = None
    patch_size: int | None = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(
                f"Task {self.name!r}: metric must be one of {METRICS}, "
                f"got {self.metric!r}."
            )
        if self.metric == "vqa" and not _has_answers(self.test):
            # Without the annotators' answers the scorer falls back to exact
            # match against one response, a different metric: refuse.
            raise ValueError(
                f"Task {self.name!r}: metric 'vqa' (VQA soft accuracy) needs "
                "the annotators' answers, but its test split has no "
                "'answers'. Load them (e.g. `load_llava_json(..., "
                "annotations_path=...)` or `load_tfds` with a sequence "
                "answer feature) or use metric='exact'."
            )

    @property
    def num_train(self):
        """The number of training examples."""
        return len(self.train["responses"])

    @property
    def num_test(self):
        """The number of test examples."""
        return len(self.test["responses"])


def _has_answers(split):
    """Whether a split (a dict) carries the annotators' `"answers"`."""
    return isinstance(split, collections.abc.Mapping) and "answers" in split


def object_array(items):
    """Returns a 1-D numpy object array holding `items` as they are.

    Unlike `np.array(items, dtype=object)`, lists of equal length stay
    python lists instead of becoming a 2-D array.

    Args:
        items: iterable. The items (str, lists of str, ...).

    Example:

    ```python
    from keras_pam.datasets import object_array

    answers = object_array([["red", "red"], ["blue", "red"]])
    assert answers.shape == (2,) and answers[0] == ["red", "red"]
    ```
    """
    items = list(items)
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


def validate_split(split, name="split"):
    """Checks that a split follows the dataset format, raising `ValueError`.

    The rules are `keras_pam.data.as_examples`'s, the learner's own check.

    Args:
        split: dict. The split to check.
        name: str. A name used in error messages. Defaults to `"split"`.

    Returns:
        The number of examples in the split.

    Example:

    ```python
    import numpy as np
    from keras_pam.datasets import validate_split

    split = {
        "images": np.zeros((1, 8, 8, 3), "uint8"),
        "prompts": np.array(["caption en\\n"], dtype=object),
        "responses": np.array(["a red circle"], dtype=object),
    }
    assert validate_split(split) == 1
    ```
    """
    if not isinstance(split, dict):
        raise ValueError(
            f"`{name}` must be a dict of arrays; received "
            f"{type(split).__name__}."
        )
    return len(as_examples(split, name=name)["images"])


@dataclasses.dataclass(frozen=True)
class TaskHyperparameters:
    """Per-task fine-tuning hyper-parameters from the PAM paper's Table 4.

    Args:
        epochs: int. Training epochs on the task.
        batch_size: int. Training batch size.
        weight_decay: float. Weight decay.
        label_smoothing: float. Label smoothing of the token targets.
        metric: str. `"vqa"` or `"exact"`; not part of Table 4, it follows
            the evaluation convention of the task (VQA soft accuracy for the
            multi-annotator VQA datasets, exact match otherwise).

    Example:

    ```python
    from keras_pam.datasets import hyperparameters

    hp = hyperparameters("ScienceQA")
    print(hp.epochs, hp.batch_size)  # 20 128
    ```
    """

    epochs: int
    batch_size: int
    weight_decay: float
    label_smoothing: float
    metric: str

    def recipe(self, gradient_accumulation_steps=1, **changes):
        """The task's `keras_pam.TaskRecipe`: these settings, the paper's
        learning rate (`PAPER_LEARNING_RATE`), and PaliGemma's transfer
        schedule (cosine with a 5 % linear warmup).

        Args:
            gradient_accumulation_steps: int. Micro-batches per update, for
                a device that cannot hold `batch_size`; must divide it.
                Defaults to `1`.
            **changes: other `TaskRecipe` fields to change, e.g. `epochs`.

        Example:

        ```python
        from keras_pam.datasets import hyperparameters

        recipe = hyperparameters("RSVQA-lr").recipe(
            gradient_accumulation_steps=4
        )
        assert recipe.micro_batch_size == 64
        assert recipe.label_smoothing == 0.2
        ```
        """
        from keras_pam.datasets.task_recipe import TaskRecipe

        settings = dict(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=PAPER_LEARNING_RATE,
            schedule="cosine",
            weight_decay=self.weight_decay,
            label_smoothing=self.label_smoothing,
            gradient_accumulation_steps=gradient_accumulation_steps,
        )
        settings.update(changes)
        return TaskRecipe(**settings)


_HP = TaskHyperparameters

# Values from Table 4 (Appendix A) of the PAM paper. The metric column is not
# part of the table (see `TaskHyperparameters`).
PAPER_TASKS = {
    "ScienceQA": _HP(20, 128, 0.0, 0.0, "exact"),
    "TextVQA": _HP(5, 256, 0.0, 0.0, "vqa"),
    "GQA": _HP(1, 256, 0.0, 0.0, "exact"),
    "VizWizVQA": _HP(10, 256, 0.0, 0.0, "vqa"),
    "VQAv2": _HP(10, 256, 1e-6, 0.0, "vqa"),
    "OCR-VQA": _HP(3, 128, 0.0, 0.0, "exact"),
    "RSVQA-lr": _HP(3, 256, 0.0, 0.2, "exact"),
    "AI2D": _HP(10, 256, 1e-6, 0.0, "exact"),
    "OKVQA": _HP(10, 128, 0.0, 0.0, "vqa"),
    "AOKVQA-MC": _HP(15, 128, 0.0, 0.0, "exact"),
    "ActivityNet-QA": _HP(1, 128, 1e-6, 0.0, "exact"),
    "MSRVTT-QA": _HP(1, 128, 0.0, 0.0, "exact"),
    "MSVD-QA": _HP(1, 128, 3e-7, 0.0, "exact"),
}

# The three CoIN task orders of the paper (Appendix A, "Tasks").
COIN_ORDERS = {
    "order1": (
        "ScienceQA",
        "TextVQA",
        "GQA",
        "VizWizVQA",
        "VQAv2",
        "OCR-VQA",
    ),
    "order2": (
        "GQA",
        "OCR-VQA",
        "ScienceQA",
        "TextVQA",
        "VizWizVQA",
        "VQAv2",
    ),
    "order3": (
        "TextVQA",
        "OCR-VQA",
        "VizWizVQA",
        "GQA",
        "ScienceQA",
        "VQAv2",
    ),
}

# The paper's extended CoIN sequence (10 tasks) and video QA sequence.
EXTENDED_COIN_ORDER = (
    "ScienceQA",
    "TextVQA",
    "AOKVQA-MC",
    "OCR-VQA",
    "RSVQA-lr",
    "VizWizVQA",
    "GQA",
    "OKVQA",
    "VQAv2",
    "AI2D",
)
VIDEO_QA_ORDER = ("MSVD-QA", "MSRVTT-QA", "ActivityNet-QA")


def hyperparameters(task_name):
    """Returns the paper's `TaskHyperparameters` for a task.

    The lookup ignores case (`"vqav2"` finds `"VQAv2"`).

    Args:
        task_name: str. A task name of `PAPER_TASKS`, e.g. `"GQA"`.

    Returns:
        A `TaskHyperparameters`.

    Example:

    ```python
    from keras_pam.datasets import hyperparameters

    assert hyperparameters("RSVQA-lr").label_smoothing == 0.2
    ```
    """
    if task_name in PAPER_TASKS:
        return PAPER_TASKS[task_name]
    lowered = {name.lower(): name for name in PAPER_TASKS}
    if isinstance(task_name, str) and task_name.lower() in lowered:
        return PAPER_TASKS[lowered[task_name.lower()]]
    raise ValueError(
        f"Unknown task {task_name!r}. Known tasks: {', '.join(PAPER_TASKS)}."
    )
