"""A procedurally generated visual question answering suite.

The suite mirrors the structure of the CoIN benchmark at toy scale: a few
tasks share a visual world (coloured shapes and rendered digits on a plain
background) and a small vocabulary, so that some tasks are close to each
other (`color` and `shape`, `digits` and `sklearn_digits`) and one is far
from the rest (`choice`, a multiple-choice task answered with an option
letter, like ScienceQA). Every generator is deterministic given its seed.

Everything is drawn on the grid of `keras_pam.datasets.grid_world.Grid`:
the image (64x64 by default) is cut into cells that coincide with the
base's ViT patches (16x16), and every object a question is about lies
whole inside one cell, jittered within it. A small ViT perceives what one
patch shows cheaply, and what straddles patches slowly; give `make_task`
the base's `image_size` and `patch_size`.

| task | CoIN analogue | question | answers | metric |
|---|---|---|---|---|
| `color` | VQAv2 | what color is the shape | 6 colours | vqa |
| `shape` | VizWizVQA | what shape is it | 5 shapes | vqa |
| `count` | (GQA-like) | how many shapes are there | one .. five | exact |
| `position` | GQA | is the red shape on the left or the right | sides | exact |
| `digits` | TextVQA | what digit is written | zero .. nine | vqa |
| `sklearn_digits` | OCR-VQA | what digit is this | zero .. nine | exact |
| `choice` | ScienceQA | which is bigger? a: .. b: .. | a, b | exact |
| `mix_choice` | AOKVQA-MC | which color is it mixed with .. | a, b | exact |
| `land_cover` | RSVQA-lr | is there water .. | yes, no, zero .. five | exact |
| `facts` | OKVQA | what is the opposite color of .. | colours, numbers | vqa |
| `diagram` | AI2D | which shape does the arrow point to .. | a, b | exact |

The last four (`EXTENDED_TASK_NAMES`) complete the paper's extended CoIN
sequence (`EXTENDED_ORDER`, the ten tasks of
`keras_pam.datasets.registry.EXTENDED_COIN_ORDER`); `TASK_NAMES` keeps the
seven tasks of the three CoIN orders (`ORDERS`), and `ALL_TASK_NAMES` and
`ALL_ORDERS` hold both. Two of the new tasks need a fact that is not in the
picture, a fixed world rule of this module: `mix_choice` the painter's
colour mixing (`COLOR_MIXES`: red and yellow give orange, blue and yellow
green, red and blue purple) and `facts` the complementary colours of the
painter's colour wheel (`OPPOSITE_COLORS`) and the corners of a shape
(`SHAPE_CORNERS`). `land_cover` is the far domain: textured overhead
"satellite" tiles of fields, water, roads and buildings instead of shapes
on a plain background. `diagram` draws three shapes on a white page, two of
them joined by a black arrow.

Every word of every task's prompts and answers is in `vocabulary_texts`,
on which the shipped tiny base's word-level tokenizer (no character
fallback) was trained.

`position` asks where one of two named objects lies, as CoIN's grounding
questions ask where a referred object is: the two lie in opposite halves
of the image, so the answer depends on which one the question names.

Numbers are always answered with words (`"three"`, `"seven"`). Tasks whose
metric is `"vqa"` also carry `"answers"`: ten copies of the reference, the
shape of VQAv2's ten annotators, so the VQA soft accuracy of a correct answer
is 1.

The video analogues of the paper's video QA sequence are in
`keras_pam.datasets.generated_video`.
"""

import itertools

from keras_pam.datasets.generated_coin import CHOICE_OPTIONS
from keras_pam.datasets.generated_coin import SKLEARN_TEST_POOL_SIZE  # noqa: F401 (old path)
from keras_pam.datasets.generated_coin import _choice_prompt
from keras_pam.datasets.generated_coin import _gen_choice
from keras_pam.datasets.generated_coin import _gen_color
from keras_pam.datasets.generated_coin import _gen_count
from keras_pam.datasets.generated_coin import _gen_digits
from keras_pam.datasets.generated_coin import _gen_position
from keras_pam.datasets.generated_coin import _gen_shape
from keras_pam.datasets.generated_coin import _make_sklearn_task
from keras_pam.datasets.generated_coin import _position_prompt
from keras_pam.datasets.generated_coin import _sklearn_digits  # noqa: F401 (old path)
from keras_pam.datasets.generated_coin import _sklearn_image  # noqa: F401 (old path)
from keras_pam.datasets.generated_coin import _sklearn_pools  # noqa: F401 (old path)
from keras_pam.datasets.generated_extended import _ROOFS  # noqa: F401 (old path)
from keras_pam.datasets.generated_extended import COLOR_MIXES  # noqa: F401 (old path)
from keras_pam.datasets.generated_extended import CORNERS_PROMPT
from keras_pam.datasets.generated_extended import DIAGRAM_QUESTIONS
from keras_pam.datasets.generated_extended import LAND_COVER_PROMPTS
from keras_pam.datasets.generated_extended import MAX_BUILDINGS
from keras_pam.datasets.generated_extended import MAX_ROADS  # noqa: F401 (old path)
from keras_pam.datasets.generated_extended import MIX_QUESTION
from keras_pam.datasets.generated_extended import OPPOSITE_COLORS  # noqa: F401 (old path)
from keras_pam.datasets.generated_extended import OPPOSITE_PROMPT
from keras_pam.datasets.generated_extended import PRIMARY_COLORS  # noqa: F401 (old path)
from keras_pam.datasets.generated_extended import SHAPE_CORNERS
from keras_pam.datasets.generated_extended import URBAN_MIN_BUILDINGS  # noqa: F401 (old path)
from keras_pam.datasets.generated_extended import YES_NO
from keras_pam.datasets.generated_extended import _gen_diagram
from keras_pam.datasets.generated_extended import _gen_facts
from keras_pam.datasets.generated_extended import _gen_land_cover
from keras_pam.datasets.generated_extended import _gen_mix_choice
from keras_pam.datasets.generated_pretraining import _COLOR_AT_SIDE_QUESTION
from keras_pam.datasets.generated_pretraining import _LARGER_QUESTIONS
from keras_pam.datasets.generated_pretraining import _OPTIONS_QUESTIONS
from keras_pam.datasets.generated_pretraining import _SIDE_QUESTIONS
from keras_pam.datasets.generated_pretraining import HANDWRITTEN_PROMPT  # noqa: F401 (old path)
from keras_pam.datasets.generated_pretraining import MIXTURE_KINDS  # noqa: F401 (old path)
from keras_pam.datasets.generated_pretraining import PERCEPTIONS  # noqa: F401 (old path)
from keras_pam.datasets.generated_pretraining import PLACES_FIRST_SHARES  # noqa: F401 (old path)
from keras_pam.datasets.generated_pretraining import PRETRAINING_QUESTIONS
from keras_pam.datasets.generated_pretraining import SIZE_WORDS
from keras_pam.datasets.generated_pretraining import TASK_PERCEPTIONS  # noqa: F401 (old path)
from keras_pam.datasets.generated_pretraining import _article
from keras_pam.datasets.generated_pretraining import _object_phrase
from keras_pam.datasets.generated_pretraining import mixture_shares  # noqa: F401 (old path)
from keras_pam.datasets.generated_pretraining import perception_probe  # noqa: F401 (old path)
from keras_pam.datasets.generated_pretraining import pretraining_mixture  # noqa: F401 (old path)
from keras_pam.datasets.generated_scenes import CAPTION_PROMPT
from keras_pam.datasets.generated_scenes import COLOR_NAMES
from keras_pam.datasets.generated_scenes import COLOR_PROMPT
from keras_pam.datasets.generated_scenes import COLORS  # noqa: F401 (old path)
from keras_pam.datasets.generated_scenes import COUNT_PROMPT
from keras_pam.datasets.generated_scenes import DIGITS_PROMPT
from keras_pam.datasets.generated_scenes import GLYPHS  # noqa: F401 (old path)
from keras_pam.datasets.generated_scenes import MAX_COUNT
from keras_pam.datasets.generated_scenes import NUM_ANNOTATORS
from keras_pam.datasets.generated_scenes import NUMBER_WORDS
from keras_pam.datasets.generated_scenes import OPTION_LETTERS
from keras_pam.datasets.generated_scenes import SHAPE_PROMPT
from keras_pam.datasets.generated_scenes import SHAPES
from keras_pam.datasets.generated_scenes import SIDES
from keras_pam.datasets.generated_scenes import SKLEARN_DIGITS_PROMPT
from keras_pam.datasets.generated_scenes import VQA_PREFIX
from keras_pam.datasets.generated_scenes import _check_sizes
from keras_pam.datasets.generated_scenes import _draw_shape  # noqa: F401 (old path)
from keras_pam.datasets.generated_scenes import _generate
from keras_pam.datasets.generated_scenes import _render  # noqa: F401 (old path)
from keras_pam.datasets.generated_scenes import _rng
from keras_pam.datasets.grid_world import DEFAULT_IMAGE_SIZE
from keras_pam.datasets.grid_world import DEFAULT_PATCH_SIZE
from keras_pam.datasets.grid_world import Grid  # noqa: F401 (old path)
from keras_pam.datasets.registry import COIN_ORDERS
from keras_pam.datasets.registry import EXTENDED_COIN_ORDER
from keras_pam.datasets.registry import Task
from keras_pam.datasets.registry import object_array

_TASKS = {
    # name: (generator, metric, CoIN analogue, description)
    "color": (
        _gen_color,
        "vqa",
        "VQAv2",
        "Colour of a single shape (VQAv2-like).",
    ),
    "shape": (
        _gen_shape,
        "vqa",
        "VizWizVQA",
        "Kind of a single shape (VQAv2/VizWiz-like).",
    ),
    "count": (
        _gen_count,
        "exact",
        None,
        "Number of shapes, one to five (GQA-like).",
    ),
    "position": (
        _gen_position,
        "exact",
        "GQA",
        "Which half of the image one of two shapes, named by colour, lies in "
        "(GQA-like grounding).",
    ),
    "digits": (
        _gen_digits,
        "vqa",
        "TextVQA",
        "Reading a rendered digit (TextVQA/OCR-like).",
    ),
    "sklearn_digits": (
        None,
        "exact",
        "OCR-VQA",
        "Reading scikit-learn's 8x8 handwritten digits (OCR-VQA-like).",
    ),
    "choice": (
        _gen_choice,
        "exact",
        "ScienceQA",
        (
            "Multiple choice on relative size, answered with the option "
            "letter (ScienceQA-like, the dissimilar task)."
        ),
    ),
    "mix_choice": (
        _gen_mix_choice,
        "exact",
        "AOKVQA-MC",
        (
            "Multiple choice on the colour the pictured colour makes when "
            "mixed with a named one, a fact not in the picture "
            "(AOKVQA-MC-like)."
        ),
    ),
    "land_cover": (
        _gen_land_cover,
        "exact",
        "RSVQA-lr",
        (
            "Questions on textured overhead tiles of fields, water, roads "
            "and buildings (RSVQA-lr-like, a far visual domain)."
        ),
    ),
    "facts": (
        _gen_facts,
        "vqa",
        "OKVQA",
        (
            "Open answers from the picture and a fact of the world: a "
            "colour's opposite, a shape's corners (OKVQA-like)."
        ),
    ),
    "diagram": (
        _gen_diagram,
        "exact",
        "AI2D",
        (
            "Multiple choice on which shape a diagram's arrow points to or "
            "comes from (AI2D-like)."
        ),
    ),
}

# The four tasks of the extended sequence only, kept apart from
# `TASK_NAMES`, the tasks of the three CoIN orders.
EXTENDED_TASK_NAMES = ("mix_choice", "land_cover", "facts", "diagram")
TASK_NAMES = tuple(n for n in _TASKS if n not in EXTENDED_TASK_NAMES)
ALL_TASK_NAMES = tuple(_TASKS)

# CoIN task -> its generated analogue.
COIN_ANALOGUES = {
    coin: name for name, (_, _, coin, _) in _TASKS.items() if coin is not None
}

# The paper's three CoIN orders with each CoIN task replaced by its analogue.
ORDERS = {
    order: tuple(COIN_ANALOGUES[coin] for coin in coin_tasks)
    for order, coin_tasks in COIN_ORDERS.items()
}
# The paper's extended CoIN sequence of ten tasks, mapped the same way.
EXTENDED_ORDER = tuple(COIN_ANALOGUES[coin] for coin in EXTENDED_COIN_ORDER)
# Every order `make_suite` knows: `ORDERS` and `"extended"`.
ALL_ORDERS = dict(ORDERS, extended=EXTENDED_ORDER)

_ANSWERS = {
    "color": COLOR_NAMES,
    "shape": SHAPES,
    "count": NUMBER_WORDS[1 : MAX_COUNT + 1],
    "position": SIDES,
    "digits": NUMBER_WORDS,
    "sklearn_digits": NUMBER_WORDS,
    "choice": OPTION_LETTERS[:CHOICE_OPTIONS],
    "mix_choice": OPTION_LETTERS[:2],
    "land_cover": YES_NO + NUMBER_WORDS[: MAX_BUILDINGS + 1],
    "facts": COLOR_NAMES + tuple(dict.fromkeys(SHAPE_CORNERS.values())),
    "diagram": OPTION_LETTERS[:2],
}


def _check_task_name(name):
    if name not in _TASKS:
        raise ValueError(
            f"Unknown task {name!r}. Known tasks: {', '.join(ALL_TASK_NAMES)}."
        )


def answer_vocabulary(name):
    """Returns the tuple of answers that a generated task can have.

    Args:
        name: str. One of `ALL_TASK_NAMES`.

    Example:

    ```python
    from keras_pam.datasets import answer_vocabulary

    assert answer_vocabulary("choice") == ("a", "b")
    ```
    """
    _check_task_name(name)
    return _ANSWERS[name]


def make_task(
    name,
    num_train=1000,
    num_test=200,
    image_size=DEFAULT_IMAGE_SIZE,
    seed=0,
    patch_size=DEFAULT_PATCH_SIZE,
):
    """Generates one task of the suite.

    The test split is drawn from its own random stream; the train split from
    another one, skipping any example (image and prompt) that is also in the
    test split, so the two splits never share an example. For
    `"sklearn_digits"` the 1797 scikit-learn images are partitioned into a
    train pool (80%) and a test pool (20%); a split larger than its pool
    repeats images, each pool image being used once before any repeats.

    Args:
        name: str. One of `ALL_TASK_NAMES` (`TASK_NAMES` and
            `EXTENDED_TASK_NAMES`).
        num_train: int. Number of training examples. Defaults to `1000`.
        num_test: int. Number of test examples. Defaults to `200`.
        image_size: int. Side `S` of the square images, a multiple of
            `patch_size`. Defaults to `64`.
        seed: int. Non-negative random seed; the same seed gives the same
            task. Defaults to `0`.
        patch_size: int. Side of the model's ViT patch: every object a
            question is about is drawn whole inside one patch
            (`keras_pam.datasets.grid_world`). Give the base's
            `vit_patch_size`. Defaults to `16`.

    Returns:
        A `Task`, recording `image_size` and `patch_size`.

    Example:

    ```python
    from keras_pam.datasets import make_task

    task = make_task("color", num_train=8, num_test=4)
    print(task.train["images"].shape)  # (8, 64, 64, 3)
    print(repr(task.train["prompts"][0]))  # 'answer en what color ...\\n'
    ```
    """
    _check_task_name(name)
    grid = _check_sizes(
        image_size, patch_size, num_train=num_train, num_test=num_test
    )
    generator, metric, _, description = _TASKS[name]
    if generator is None:
        train, test = _make_sklearn_task(num_train, num_test, grid, seed)
    else:
        test, test_keys = _generate(
            generator, num_test, grid, _rng(seed, name, "test")
        )
        train, _ = _generate(
            generator,
            num_train,
            grid,
            _rng(seed, name, "train"),
            exclude=test_keys,
        )
    if metric == "vqa":
        for split in (train, test):
            answers = [[r] * NUM_ANNOTATORS for r in split["responses"]]
            split["answers"] = object_array(answers)
    return Task(
        name=name,
        train=train,
        test=test,
        metric=metric,
        description=description,
        image_size=grid.image_size,
        patch_size=grid.patch_size,
    )


def _suite_tasks(order, tasks, orders, what):
    """The task names of a suite: `tasks` as given, or those of `order`
    (a key of `orders`, called `what` in the error)."""
    if tasks is None:
        if order not in orders:
            raise ValueError(
                f"Unknown {what} {order!r}. Known {what}s: {', '.join(orders)}."
            )
        tasks = orders[order]
    if isinstance(tasks, str):
        raise TypeError("tasks must be a sequence of task names, not a str.")
    return tasks


def make_suite(
    order="order1",
    num_train=1000,
    num_test=200,
    image_size=DEFAULT_IMAGE_SIZE,
    seed=0,
    tasks=None,
    patch_size=DEFAULT_PATCH_SIZE,
):
    """Generates a sequence of tasks.

    Args:
        order: str. A key of `ALL_ORDERS`: `"order1"`, `"order2"`,
            `"order3"` (`ORDERS`, the paper's CoIN orders mapped to the
            generated analogues) or `"extended"` (`EXTENDED_ORDER`, the
            paper's ten-task extended sequence). Ignored when `tasks` is
            given. Defaults to `"order1"`.
        num_train: int. Training examples per task. Defaults to `1000`.
        num_test: int. Test examples per task. Defaults to `200`.
        image_size: int. Image side. Defaults to `64`.
        seed: int. Random seed shared by all tasks (each task has its own
            stream). Defaults to `0`.
        tasks: list of str, optional. Explicit task names of
            `ALL_TASK_NAMES`, in order, used instead of `order`. Defaults
            to `None`.
        patch_size: int. The base's ViT patch side (see `make_task`).
            Defaults to `16`.

    Returns:
        A list of `Task`.

    Example:

    ```python
    from keras_pam.datasets import make_suite

    suite = make_suite("order2", num_train=4, num_test=2)
    print([task.name for task in suite])
    extended = make_suite("extended", num_train=4, num_test=2)
    assert len(extended) == 10 and extended[-1].name == "diagram"
    ```
    """
    tasks = _suite_tasks(order, tasks, ALL_ORDERS, "order")
    for name in tasks:
        _check_task_name(name)
    return [
        make_task(name, num_train, num_test, image_size, seed, patch_size)
        for name in tasks
    ]


def vocabulary_texts():
    """Returns texts that hold every word the generators can produce.

    Every prompt of every generated task (`ALL_TASK_NAMES`), every answer,
    every question phrasing of the pretraining mixture and a caption of
    every kind, so a word-level tokenizer trained on them knows every word
    of the suite. The shipped tiny base's tokenizer was trained on these
    texts.

    Returns:
        A list of unique str, in a fixed order.

    Example:

    ```python
    from keras_pam.datasets import vocabulary_texts

    texts = vocabulary_texts()
    assert "answer en what color is the shape\\n" in texts
    assert "digit seven" in texts
    ```
    """
    texts = [
        CAPTION_PROMPT,
        COLOR_PROMPT,
        SHAPE_PROMPT,
        COUNT_PROMPT,
        DIGITS_PROMPT,
        SKLEARN_DIGITS_PROMPT,
        OPPOSITE_PROMPT,
        CORNERS_PROMPT,
        *LAND_COVER_PROMPTS.values(),
    ]
    for name in ALL_TASK_NAMES:
        texts.extend(_ANSWERS[name])
        if name == "mix_choice":
            # The pretraining's option questions answer a, b or c. "c" was
            # listed here while `mix_choice` had three options, and the
            # shipped tokenizer was trained on this list, in this order.
            texts.extend(OPTION_LETTERS)
    for color in COLOR_NAMES:
        for horizontal in (True, False):
            texts.append(_position_prompt(color, horizontal))
            question = _SIDE_QUESTIONS[horizontal].format(color)
            texts.append(VQA_PREFIX + question + "\n")
        texts.append(VQA_PREFIX + MIX_QUESTION.format(color))
    for side in SIDES:
        question = _COLOR_AT_SIDE_QUESTION.format(side)
        texts.append(VQA_PREFIX + question + "\n")
    for question in _LARGER_QUESTIONS.values():
        texts.append(VQA_PREFIX + question.format(*COLOR_NAMES[:3]) + "\n")
    for phrasings in _OPTIONS_QUESTIONS.values():
        texts.extend(VQA_PREFIX + q for q in phrasings)
    for a, b in itertools.permutations(COLOR_NAMES, 2):
        texts.append(f"the {a} shape is bigger than the {b} shape")
    for names in (SHAPES, COLOR_NAMES):
        for n in (2, 3):
            for options in itertools.permutations(names, n):
                texts.append(_choice_prompt(options, True))
                texts.append(_choice_prompt(options, False))
    texts.extend(VQA_PREFIX + q for q in DIAGRAM_QUESTIONS.values())
    for phrasings in PRETRAINING_QUESTIONS.values():
        texts.extend(VQA_PREFIX + q + "\n" for q in phrasings)
    texts.extend(SIZE_WORDS)
    for color in COLOR_NAMES:
        for shape in SHAPES:
            texts.append(_object_phrase(shape, color))
            for size_word in SIZE_WORDS:
                texts.append(
                    f"{_article(size_word)} {size_word} {color} {shape}"
                )
    texts.append("one shape")
    texts.extend(f"{NUMBER_WORDS[n]} shapes" for n in range(2, MAX_COUNT + 1))
    texts.extend(f"digit {word}" for word in NUMBER_WORDS)
    texts.extend(f"handwritten {word}" for word in NUMBER_WORDS)
    texts.extend(["on the left and", "at the top and", "right bottom"])
    return list(dict.fromkeys(texts))
