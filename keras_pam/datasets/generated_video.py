"""Procedurally generated video question answering: the video QA analogues.

The paper's video QA sequence (`keras_pam.datasets.registry.
VIDEO_QA_ORDER`: MSVD-QA, MSRVTT-QA, ActivityNet-QA) at toy scale, in the
visual world of `keras_pam.datasets.generated` (coloured shapes on a plain
background, each whole inside one ViT patch of every frame). A clip is `F`
frames (`num_frames`, default 4), so a split's `"images"` are uint8
`(N, F, S, S, 3)`, the format of `keras_pam.datasets.load_video_qa_json`.
Every question needs more than one frame: no single frame answers it.

| task | analogue | question | answers |
|---|---|---|---|
| `direction` | MSVD-QA | where does the shape move to | left .. below |
| `appearances` | MSRVTT-QA | how many times does the red shape .. | zero .. |
| `order` | ActivityNet-QA | which is shown first the red shape .. | colours |

- `direction` stands for MSVD-QA, short clips of one simple action: one
  shape moves by one cell (one patch) every frame. Its world wraps around
  (a shape leaving on the right comes back on the left), so every single
  frame is a uniformly placed shape whatever the direction: one frame is
  identically distributed for the four answers, and only the displacement
  between frames answers. Answers are `"left"`, `"right"`, `"above"`
  (upwards) and `"below"` (downwards): the shipped tokenizer has no
  `"up"` or `"down"`.
- `appearances` stands for MSRVTT-QA, more varied clips whose questions
  aggregate what happens over the whole clip: one or two shapes flash in
  each frame, at new places, and the answer is the number of frames that
  show a shape of the named colour (zero to `min(F, 5)`). One frame tells
  only whether that frame shows it.
- `order` stands for ActivityNet-QA, long videos with questions on the
  temporal order of events: each of two named colours is shown in exactly
  one frame, distractor colours in the others, and the answer is the
  colour shown first. One frame shows at most one of the two; it needs at
  least three frames (with two, one frame would answer).

All three use the metric `"exact"` (Table 4's metric for these datasets).
The answers are words of the shipped tiny base's tokenizer; a few fixed
question words (`"where"`, `"move"`, `"times"`, `"appear"`, `"first"`)
are not, and tokenize to `<unk>` without making two questions of a task
read alike.
"""

import numpy as np

from keras_pam.datasets.generated import _suite_tasks
from keras_pam.datasets.generated_scenes import _SINGLE_RADIUS
from keras_pam.datasets.generated_scenes import COLOR_NAMES
from keras_pam.datasets.generated_scenes import MAX_COUNT
from keras_pam.datasets.generated_scenes import NUMBER_WORDS
from keras_pam.datasets.generated_scenes import SHAPES
from keras_pam.datasets.generated_scenes import VQA_PREFIX
from keras_pam.datasets.generated_scenes import _as_split
from keras_pam.datasets.generated_scenes import _background
from keras_pam.datasets.generated_scenes import _check_sizes
from keras_pam.datasets.generated_scenes import _objects_in_cells
from keras_pam.datasets.generated_scenes import _render
from keras_pam.datasets.generated_scenes import _rng
from keras_pam.datasets.grid_world import DEFAULT_IMAGE_SIZE
from keras_pam.datasets.grid_world import DEFAULT_PATCH_SIZE
from keras_pam.datasets.registry import VIDEO_QA_ORDER
from keras_pam.datasets.registry import Task

DEFAULT_NUM_FRAMES = 4

# Direction -> (dx, dy) of one step, in image coordinates (y grows down).
DIRECTIONS = {
    "left": (-1, 0),
    "right": (1, 0),
    "above": (0, -1),
    "below": (0, 1),
}
DIRECTION_PROMPT = VQA_PREFIX + "where does the shape move to\n"
APPEARANCES_QUESTION = "how many times does the {} shape appear"
ORDER_QUESTION = "which is shown first the {} shape or the {} shape"


def _check_frames(name, num_frames):
    low = _MIN_FRAMES[name]
    if not isinstance(num_frames, (int, np.integer)) or num_frames < low:
        raise ValueError(
            f"num_frames must be an int >= {low} for {name!r} (one frame "
            f"must not answer its question), got {num_frames!r}."
        )


def _gen_direction(rng, grid, num_frames):
    shape = SHAPES[rng.integers(len(SHAPES))]
    color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    r = grid.radius(rng, *_SINGLE_RADIUS)
    # One jittered place inside a cell, kept in every frame: the shape
    # moves by whole cells, so it always lies whole inside one patch.
    cx, cy = grid.centre(rng, 0, r)
    scene = _render(
        grid.image_size, _background(rng), [(shape, color, cx, cy, r)]
    )
    # A uniformly random cell on the wrapped-around (periodic) grid: every
    # frame has the same distribution, whatever the direction.
    row, column = (int(v) for v in rng.integers(0, grid.cells, 2))
    # The direction is drawn after the scene.
    direction = tuple(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    dx, dy = DIRECTIONS[direction]
    patch = grid.patch_size
    clip = np.stack(
        [
            np.roll(
                scene,
                ((row + k * dy) * patch, (column + k * dx) * patch),
                (0, 1),
            )
            for k in range(num_frames)
        ]
    )
    return clip, DIRECTION_PROMPT, direction


def _flash_frame(rng, grid, background, colors):
    """One frame: a shape of each colour, each in a new cell of its own."""
    cells = grid.distinct_cells(rng, len(colors))
    objects = _objects_in_cells(rng, grid, cells, colors=colors)
    return _render(grid.image_size, background, objects)


def _distractors(rng, exclude, count):
    others = [c for c in COLOR_NAMES if c not in exclude]
    return [others[i] for i in rng.choice(len(others), count, replace=False)]


def _gen_appearances(rng, grid, num_frames):
    target = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    count = int(rng.integers(0, min(num_frames, MAX_COUNT) + 1))
    shown = set(int(k) for k in rng.choice(num_frames, count, replace=False))
    background = _background(rng)
    frames = []
    for k in range(num_frames):
        num_objects = int(rng.integers(1, 3))
        if k in shown:
            colors = [target] + _distractors(rng, [target], num_objects - 1)
            colors = [colors[i] for i in rng.permutation(num_objects)]
        else:
            colors = _distractors(rng, [target], num_objects)
        frames.append(_flash_frame(rng, grid, background, colors))
    prompt = VQA_PREFIX + APPEARANCES_QUESTION.format(target) + "\n"
    return np.stack(frames), prompt, NUMBER_WORDS[count]


def _gen_order(rng, grid, num_frames):
    a, b = (COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), 2, False))
    frame_a, frame_b = (int(k) for k in rng.choice(num_frames, 2, False))
    background = _background(rng)
    frames = []
    for k in range(num_frames):
        num_objects = int(rng.integers(1, 3))
        colors = _distractors(rng, [a, b], num_objects)
        if k in (frame_a, frame_b):
            colors[0] = a if k == frame_a else b
        frames.append(_flash_frame(rng, grid, background, colors))
    named = (a, b) if rng.random() < 0.5 else (b, a)
    prompt = VQA_PREFIX + ORDER_QUESTION.format(*named) + "\n"
    return np.stack(frames), prompt, a if frame_a < frame_b else b


_VIDEO_TASKS = {
    # name: (generator, video QA analogue, description)
    "direction": (
        _gen_direction,
        "MSVD-QA",
        "Direction a shape moves in (MSVD-QA-like, one short action).",
    ),
    "appearances": (
        _gen_appearances,
        "MSRVTT-QA",
        (
            "Number of frames showing a named colour (MSRVTT-QA-like, an "
            "aggregate over the clip)."
        ),
    ),
    "order": (
        _gen_order,
        "ActivityNet-QA",
        (
            "Which of two named colours is shown first (ActivityNet-QA-like, "
            "the temporal order of events)."
        ),
    ),
}
_MIN_FRAMES = {"direction": 2, "appearances": 2, "order": 3}

VIDEO_TASK_NAMES = tuple(_VIDEO_TASKS)

# Video QA task of the paper -> its generated analogue.
VIDEO_ANALOGUES = {
    analogue: name for name, (_, analogue, _) in _VIDEO_TASKS.items()
}

# The paper's video QA sequence with each task replaced by its analogue.
VIDEO_ORDER = tuple(VIDEO_ANALOGUES[task] for task in VIDEO_QA_ORDER)
VIDEO_ORDERS = {"video": VIDEO_ORDER}


def _check_video_task_name(name):
    if name not in _VIDEO_TASKS:
        raise ValueError(
            f"Unknown video task {name!r}. Known video tasks: "
            f"{', '.join(VIDEO_TASK_NAMES)}."
        )


def video_answer_vocabulary(name, num_frames=None):
    """Returns the tuple of answers that a generated video task can have.

    Args:
        name: str. One of `VIDEO_TASK_NAMES`.
        num_frames: int, optional. Frames per clip: the answers clips of
            that many frames can have (`"appearances"` counts up to
            `min(num_frames, 5)`). Defaults to `None`, the answers of any
            number of frames.

    Example:

    ```python
    from keras_pam.datasets import video_answer_vocabulary

    assert video_answer_vocabulary("direction") == (
        "left", "right", "above", "below"
    )
    assert video_answer_vocabulary("appearances", num_frames=2) == (
        "zero", "one", "two"
    )
    ```
    """
    _check_video_task_name(name)
    if name == "direction":
        return tuple(DIRECTIONS)
    if name == "order":
        return COLOR_NAMES
    top = MAX_COUNT if num_frames is None else min(num_frames, MAX_COUNT)
    return NUMBER_WORDS[: top + 1]


def _generate_clips(generator, num, grid, num_frames, rng, exclude=None):
    """Runs `generator` until `num` clips not in `exclude` are drawn."""
    size = grid.image_size
    clips = np.empty((num, num_frames, size, size, 3), dtype=np.uint8)
    prompts, responses, keys = [], [], set()
    i = 0
    while i < num:
        clip, prompt, response = generator(rng, grid, num_frames)
        key = (clip.tobytes(), prompt)
        if exclude is not None and key in exclude:
            continue
        clips[i] = clip
        prompts.append(prompt)
        responses.append(response)
        keys.add(key)
        i += 1
    return _as_split(clips, prompts, responses), keys


def make_video_task(
    name,
    num_train=1000,
    num_test=200,
    image_size=DEFAULT_IMAGE_SIZE,
    num_frames=DEFAULT_NUM_FRAMES,
    seed=0,
    patch_size=DEFAULT_PATCH_SIZE,
):
    """Generates one video task.

    As `keras_pam.datasets.make_task`: the test split is drawn from its
    own random stream, the train split from another one that skips any
    example (clip and prompt) of the test split.

    Args:
        name: str. One of `VIDEO_TASK_NAMES`.
        num_train: int. Number of training examples. Defaults to `1000`.
        num_test: int. Number of test examples. Defaults to `200`.
        image_size: int. Side `S` of the square frames, a multiple of
            `patch_size`. Defaults to `64`.
        num_frames: int. Frames `F` per clip, at least 2 (3 for
            `"order"`). Defaults to `4`.
        seed: int. Non-negative random seed; the same seed gives the same
            task. Defaults to `0`.
        patch_size: int. The base's ViT patch side: every shape lies whole
            inside one patch of every frame. Defaults to `16`.

    Returns:
        A `Task` whose splits' `"images"` are uint8 `(N, F, S, S, 3)`.

    Example:

    ```python
    from keras_pam.datasets import make_video_task

    task = make_video_task("direction", num_train=8, num_test=4)
    print(task.train["images"].shape)  # (8, 4, 64, 64, 3)
    print(task.train["prompts"][0], task.train["responses"][0])
    ```
    """
    _check_video_task_name(name)
    grid = _check_sizes(
        image_size, patch_size, num_train=num_train, num_test=num_test
    )
    _check_frames(name, num_frames)
    generator, _, description = _VIDEO_TASKS[name]
    test, test_keys = _generate_clips(
        generator, num_test, grid, num_frames, _rng(seed, name, "test")
    )
    train, _ = _generate_clips(
        generator,
        num_train,
        grid,
        num_frames,
        _rng(seed, name, "train"),
        exclude=test_keys,
    )
    return Task(
        name=name,
        train=train,
        test=test,
        metric="exact",
        description=description,
        image_size=grid.image_size,
        patch_size=grid.patch_size,
    )


def make_video_suite(
    order="video",
    num_train=1000,
    num_test=200,
    image_size=DEFAULT_IMAGE_SIZE,
    num_frames=DEFAULT_NUM_FRAMES,
    seed=0,
    tasks=None,
    patch_size=DEFAULT_PATCH_SIZE,
):
    """Generates a sequence of video tasks.

    Args:
        order: str. A key of `VIDEO_ORDERS`: `"video"` (`VIDEO_ORDER`,
            the paper's MSVD-QA, MSRVTT-QA, ActivityNet-QA sequence mapped
            to the generated analogues). Ignored when `tasks` is given.
            Defaults to `"video"`.
        num_train: int. Training examples per task. Defaults to `1000`.
        num_test: int. Test examples per task. Defaults to `200`.
        image_size: int. Frame side. Defaults to `64`.
        num_frames: int. Frames per clip. Defaults to `4`.
        seed: int. Random seed shared by all tasks (each task has its own
            stream). Defaults to `0`.
        tasks: list of str, optional. Explicit names of
            `VIDEO_TASK_NAMES`, in order, used instead of `order`.
            Defaults to `None`.
        patch_size: int. The base's ViT patch side. Defaults to `16`.

    Returns:
        A list of `Task`.

    Example:

    ```python
    from keras_pam.datasets import make_video_suite

    suite = make_video_suite(num_train=4, num_test=2, num_frames=3)
    print([task.name for task in suite])  # direction, appearances, order
    ```
    """
    tasks = _suite_tasks(order, tasks, VIDEO_ORDERS, "video order")
    for name in tasks:
        _check_video_task_name(name)
        _check_frames(name, num_frames)
    return [
        make_video_task(
            name, num_train, num_test, image_size, num_frames, seed, patch_size
        )
        for name in tasks
    ]
