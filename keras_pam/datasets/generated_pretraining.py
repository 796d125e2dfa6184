"""The tiny base's pretraining mixture and its perception probe: captions
and questions over the generated world, by kind and share."""

import numpy as np

from keras_pam.datasets.generated_coin import _sklearn_digits
from keras_pam.datasets.generated_coin import _sklearn_image
from keras_pam.datasets.generated_coin import _sklearn_pools
from keras_pam.datasets.generated_scenes import CAPTION_PROMPT
from keras_pam.datasets.generated_scenes import COLOR_NAMES
from keras_pam.datasets.generated_scenes import MAX_COUNT
from keras_pam.datasets.generated_scenes import NUMBER_WORDS
from keras_pam.datasets.generated_scenes import OPTION_LETTERS
from keras_pam.datasets.generated_scenes import SHAPES
from keras_pam.datasets.generated_scenes import VQA_PREFIX
from keras_pam.datasets.generated_scenes import _as_split
from keras_pam.datasets.generated_scenes import _background
from keras_pam.datasets.generated_scenes import _check_sizes
from keras_pam.datasets.generated_scenes import _digit_image
from keras_pam.datasets.generated_scenes import _many_objects
from keras_pam.datasets.generated_scenes import _objects_in_cells
from keras_pam.datasets.generated_scenes import _opposite_halves
from keras_pam.datasets.generated_scenes import _options_prompt
from keras_pam.datasets.generated_scenes import _render
from keras_pam.datasets.generated_scenes import _rng
from keras_pam.datasets.generated_scenes import _single_object
from keras_pam.datasets.generated_scenes import _size_levels
from keras_pam.datasets.grid_world import DEFAULT_IMAGE_SIZE
from keras_pam.datasets.grid_world import DEFAULT_PATCH_SIZE

SIZE_WORDS = ("small", "big")
HANDWRITTEN_PROMPT = CAPTION_PROMPT

# Generic questions of the pretraining mixture, in several phrasings each.
# None of them is the phrasing of a task (`COLOR_PROMPT`, ...): a task
# teaches its own question format and answer space to a base that already
# perceives what the answer needs.
PRETRAINING_QUESTIONS = {
    "color": (
        "what colour is the object",
        "which color does it have",
        "name the colour",
        "what colour does the object have?",
    ),
    "shape": (
        "what kind of shape is this",
        "which shape do you see",
        "name the shape",
        "what shape is shown?",
    ),
    "count": (
        "how many objects are in the image",
        "count the shapes",
        "how many objects are there?",
    ),
    "digit": (
        "which number is shown",
        "read the digit",
        "what number is written here?",
    ),
    "size": ("is the object small or big",),
}
# Where one named object of two lies: the answer words of `position`.
_SIDE_QUESTIONS = {
    True: "is the {} object in the left half or the right half",
    False: "is the {} object in the top half or the bottom half",
}
# The other way round: which object lies in a half.
_COLOR_AT_SIDE_QUESTION = "what colour is the object in the {} half"
_LARGER_QUESTIONS = {
    (2, True): "which is larger the {} shape or the {} shape",
    (2, False): "which is smaller the {} shape or the {} shape",
    (3, True): "which is the largest the {} shape the {} shape or the {} shape",
    (3, False): (
        "which is the smallest the {} shape the {} shape or the {} shape"
    ),
}
# Multiple choice in the pretraining's own words: the base learns to answer
# with the letter of the option that names what it perceives.
# Several phrasings each, as a language model has met many ways to ask.
_OPTIONS_QUESTIONS = {
    "color": ("choose the colour of the object", "which colour is it?"),
    "shape": ("choose the shape of the object", "which shape is it?"),
    (2, True): ("choose the larger one", "which one of the two is bigger?"),
    (2, False): ("choose the smaller one", "which one of the two is smaller?"),
    (3, True): ("choose the largest one", "which one is the biggest?"),
    (3, False): ("choose the smallest one", "which one is the smallest?"),
}

# The perceptions of the base (`PERCEPTIONS`), each probed on fresh generic
# questions: "relation" is where a named object of two lies, "options"
# which option names the larger (smaller) of 2-3 shapes, answered with its
# letter.
PERCEPTIONS = (
    "color",
    "shape",
    "size",
    "count",
    "relation",
    "digit",
    "larger",
    "options",
)
# The two kinds of digit images, probed apart: `digits` reads rendered
# glyphs, `sklearn_digits` handwritten ones.
_DIGIT_SOURCES = {
    "rendered digit": "rendered",
    "handwritten digit": "handwritten",
}
# The perception each generated task needs, in its probe's name.
TASK_PERCEPTIONS = {
    "color": "color",
    "shape": "shape",
    "count": "count",
    "position": "relation",
    "digits": "rendered digit",
    "sklearn_digits": "handwritten digit",
    "choice": "options",
}
# The kinds of pretraining examples and their shares of the mixture.
# Binding a name to a place ("relation") costs a small ViT the most steps,
# so it gets the largest share. "place" asks where a named object lies
# among one or two anywhere: when both lie in the same half, reading
# places alone answers it, which gives binding a gradient to start from.
_MIXTURE_SHARES = {
    "single": 0.14,  # Colour, shape, size and side of one object.
    "count": 0.10,
    "digit": 0.16,  # Rendered and handwritten.
    "place": 0.08,
    "relation": 0.22,
    "larger": 0.12,
    "options": 0.18,
}
# The shares of a build's first chunks (`places_first` of the steps): a
# ViT trained on the whole mixture from the start answers every place
# question with one side, while one trained on places alone first learns
# to bind names to places.
PLACES_FIRST_SHARES = {
    "single": 0.20,
    "place": 0.45,
    "relation": 0.35,
}
MIXTURE_KINDS = tuple(_MIXTURE_SHARES)


def mixture_shares():
    """The default shares of each kind of example in `pretraining_mixture`.

    Returns:
        A dict from kind (`MIXTURE_KINDS`) to its share, summing to 1.
    """
    return dict(_MIXTURE_SHARES)


def _check_shares(shares):
    if not isinstance(shares, dict) or not shares:
        raise ValueError(
            f"`shares` must be a non-empty dict. Received: {shares!r}"
        )
    unknown = sorted(set(shares) - set(MIXTURE_KINDS))
    if unknown:
        raise ValueError(
            f"Unknown mixture kinds {unknown}. Known: "
            f"{', '.join(MIXTURE_KINDS)}."
        )
    values = np.array([shares[k] for k in shares], dtype=float)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"Mixture shares must be >= 0. Received: {shares}")
    if abs(values.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"Mixture shares must sum to 1. Received: {shares} "
            f"(sum {values.sum():.4f})."
        )
    return shares


def _pick(rng, phrasings):
    return phrasings[rng.integers(len(phrasings))]


def _question(rng, kind):
    phrasings = PRETRAINING_QUESTIONS[kind]
    return VQA_PREFIX + phrasings[rng.integers(len(phrasings))] + "\n"


def _size_word(r, grid):
    """`"small"` or `"big"` for a clearly sized shape, else `None`."""
    if r <= 0.25 * grid.patch_size:
        return "small"
    if r >= 0.375 * grid.patch_size:
        return "big"
    return None


def _single_example(rng, grid, kind=None):
    r = grid.radius(rng, 0.19, 0.5)
    image, shape, color, _, cell = _single_object(rng, grid, radius=r)
    size_word = _size_word(r, grid)
    if kind is None:
        draw = rng.random()
        kind = (
            "caption"
            if draw < 0.25
            else "color"
            if draw < 0.42
            else "shape"
            if draw < 0.75
            else "side"
            if draw < 0.87 or size_word is None
            else "size"
        )
    if kind == "caption":
        words = [_article(size_word or color), size_word, color, shape]
        return image, CAPTION_PROMPT, " ".join(w for w in words if w)
    if kind == "size" and size_word is None:
        return _single_example(rng, grid, kind)
    if kind == "side":
        # Where the only object lies: the place without the binding.
        horizontal = bool(rng.random() < 0.5)
        index = grid.row_column(cell)[1 if horizontal else 0]
        if abs(index - (grid.cells - 1) / 2) < 0.5:
            kind = "shape"  # The middle row or column of an odd grid.
        else:
            question = _SIDE_QUESTIONS[horizontal].format(color)
            side = grid.side(cell, horizontal)
            return image, VQA_PREFIX + question + "\n", side
    answer = {"color": color, "shape": shape, "size": size_word}[kind]
    return image, _question(rng, kind), answer


def _count_example(rng, grid, caption=None):
    count = int(rng.integers(1, MAX_COUNT + 1))
    image = _many_objects(rng, grid, count)
    if caption is None:
        caption = rng.random() < 0.3
    if caption:
        noun = "shape" if count == 1 else "shapes"
        return image, CAPTION_PROMPT, f"{NUMBER_WORDS[count]} {noun}"
    return image, _question(rng, "count"), NUMBER_WORDS[count]


def _digit_example(rng, grid, handwritten_pool, caption=None, source=None):
    digit = int(rng.integers(10))
    if source is None:
        handwritten = handwritten_pool is not None and rng.random() < 0.5
    else:
        handwritten = source == "handwritten"
    if handwritten:
        _, targets = _sklearn_digits()
        index = int(
            rng.choice(handwritten_pool[targets[handwritten_pool] == digit])
        )
        image = _sklearn_image(rng, grid, index)
        caption_text = f"handwritten {NUMBER_WORDS[digit]}"
    else:
        image = _digit_image(rng, grid, digit)
        caption_text = f"digit {NUMBER_WORDS[digit]}"
    if caption is None:
        caption = rng.random() < 0.3
    if caption:
        return image, CAPTION_PROMPT, caption_text
    return image, _question(rng, "digit"), NUMBER_WORDS[digit]


def _relation_example(rng, grid, kind=None):
    """Two objects in opposite halves: where the named one lies, or which
    one lies in a named half."""
    horizontal = bool(rng.random() < 0.5)
    cells = grid.distinct_cells(rng, 2, _opposite_halves(grid, horizontal))
    colors = [COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), 2, False)]
    objects = _objects_in_cells(rng, grid, cells, colors=colors)
    image = _render(grid.image_size, _background(rng), objects)
    sides = [grid.side(cell, horizontal) for cell in cells]
    if kind is None:
        draw = rng.random()
        kind = "caption" if draw < 0.25 else "side" if draw < 0.75 else "color"
    if kind == "caption":
        where = "on the" if horizontal else "at the"
        phrases = [
            f"{_object_phrase(shape, color)} {where} {side}"
            for (shape, color, *_), side in zip(objects, sides, strict=True)
        ]
        return image, CAPTION_PROMPT, " and ".join(phrases)
    named = int(rng.integers(2))
    if kind == "color":
        question = _COLOR_AT_SIDE_QUESTION.format(sides[named])
        return image, VQA_PREFIX + question + "\n", colors[named]
    question = _SIDE_QUESTIONS[horizontal].format(colors[named])
    return image, VQA_PREFIX + question + "\n", sides[named]


def _place_example(rng, grid):
    """Where a named object lies among one or two anywhere in the image.

    Unlike `_relation_example` the two may share a half, so a model that
    reads where objects lie is right more often than chance before it
    binds the name to its object.
    """
    horizontal = bool(rng.random() < 0.5)
    middle = (grid.cells - 1) / 2

    def off_middle(cells):
        index = grid.row_column(cells[0])[1 if horizontal else 0]
        return abs(index - middle) >= 0.5

    count = int(rng.integers(1, 3))
    cells = grid.distinct_cells(rng, count, off_middle)
    colors = [
        COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), count, False)
    ]
    objects = _objects_in_cells(rng, grid, cells, colors=colors)
    image = _render(grid.image_size, _background(rng), objects)
    question = _SIDE_QUESTIONS[horizontal].format(colors[0])
    return image, VQA_PREFIX + question + "\n", grid.side(cells[0], horizontal)


def _sized_objects(rng, grid, n):
    """`n` shapes of clearly different sizes (`_size_levels`), each in a
    cell of its own, in distinct colours and kinds."""
    radii = [int(r) for r in rng.permutation(_size_levels(grid, n))]
    cells = grid.distinct_cells(rng, n)
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), n, replace=False)]
    colors = [COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), n, False)]
    objects = [
        (s, c, *grid.centre(rng, cell, r), r)
        for s, c, cell, r in zip(shapes, colors, cells, radii, strict=True)
    ]
    image = _render(grid.image_size, _background(rng), objects)
    return image, shapes, colors, radii


def _num_sized(rng, grid):
    # Three sizes 1.75 times apart do not fit a cell under 16 pixels.
    return 2 if grid.patch_size < 16 or rng.random() < 0.5 else 3


def _larger_example(rng, grid, caption=None):
    """2-3 shapes of clearly different sizes: which colour is the larger
    (the smaller, the largest, the smallest)."""
    n = _num_sized(rng, grid)
    image, _, colors, radii = _sized_objects(rng, grid, n)
    larger = bool(rng.random() < 0.5)
    if caption is None:
        caption = n == 2 and rng.random() < 0.3
    if caption:
        big, small = (
            colors[int(np.argmax(radii))],
            colors[int(np.argmin(radii))],
        )
        text = f"the {big} shape is bigger than the {small} shape"
        return image, CAPTION_PROMPT, text
    target = int(np.argmax(radii) if larger else np.argmin(radii))
    order = [int(i) for i in rng.permutation(n)]
    question = _LARGER_QUESTIONS[n, larger].format(*[colors[i] for i in order])
    return image, VQA_PREFIX + question + "\n", colors[target]


def _options_example(rng, grid, kind=None):
    """Multiple choice in generic words, answered with an option letter:
    the colour or the shape of one object, or the larger (smaller) of 2-3."""
    if kind is None:
        kind = ("color", "shape", "size")[rng.integers(3)]
    if kind == "size":
        n = _num_sized(rng, grid)
        _, shapes, colors, radii = sized = _sized_objects(rng, grid, n)
        image = sized[0]
        larger = bool(rng.random() < 0.5)
        target = int(np.argmax(radii) if larger else np.argmin(radii))
        names = shapes if rng.random() < 0.5 else colors
        order = [int(i) for i in rng.permutation(n)]
        options = [names[i] for i in order]
        question = _pick(rng, _OPTIONS_QUESTIONS[n, larger])
        answer = OPTION_LETTERS[order.index(target)]
        return image, _options_prompt(question, options), answer
    image, shape, color, _, _ = _single_object(rng, grid)
    names, right = (COLOR_NAMES, color) if kind == "color" else (SHAPES, shape)
    others = [name for name in names if name != right]
    n = int(rng.integers(2, 4))
    picks = [others[i] for i in rng.choice(len(others), n - 1, False)]
    options = [right] + picks
    order = [int(i) for i in rng.permutation(n)]
    options = [options[i] for i in order]
    answer = OPTION_LETTERS[order.index(0)]
    question = _pick(rng, _OPTIONS_QUESTIONS[kind])
    return image, _options_prompt(question, options), answer


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(shape, color):
    return f"{_article(color)} {color} {shape}"


def pretraining_mixture(
    num_examples,
    image_size=DEFAULT_IMAGE_SIZE,
    seed=0,
    patch_size=DEFAULT_PATCH_SIZE,
    shares=None,
):
    """Generates the broad pretraining mixture of the generated world.

    It stands in for PaliGemma's pretraining: captions (prompt
    `"caption en\n"`) that name colours, shapes, sizes, counts, places
    and digits (`"a big red circle"`, `"three shapes"`, `"digit five"`,
    `"handwritten seven"`, `"a red circle on the left and a blue square on
    the right"`), and generic questions about the same things in several
    phrasings (`PRETRAINING_QUESTIONS`, `"answer en name the colour\n"`),
    answered with the world's words. A base pretrained on it perceives
    what every task of the suite needs, but has never seen a task's own
    question format: a task teaches that format and its answer space. The
    handwritten digits come only from the scikit-learn images that no test
    split ever uses (`SKLEARN_TEST_POOL_SIZE`). Objects lie whole inside
    the cells of `keras_pam.datasets.grid_world.Grid`, like the tasks'.

    Args:
        num_examples: int. Number of examples.
        image_size: int. Image side. Defaults to `64`.
        seed: int. Random seed. Defaults to `0`.
        patch_size: int. The ViT patch side. Defaults to `16`.
        shares: dict. The share of each kind of example (`MIXTURE_KINDS`;
            kinds left out get none), summing to 1. Defaults to `None`:
            `mixture_shares()`.

    Returns:
        A split dict with `"images"`, `"prompts"` and `"responses"`.

    Example:

    ```python
    from keras_pam.datasets import pretraining_mixture

    data = pretraining_mixture(16)
    print(data["prompts"][0], data["responses"][0])
    ```
    """
    grid = _check_sizes(image_size, patch_size, num_examples=num_examples)
    shares = _check_shares(_MIXTURE_SHARES if shares is None else shares)
    rng = _rng(seed, "pretraining", "pretraining")
    _, train_pool = _sklearn_pools()
    kinds = tuple(shares)
    shares = np.array([shares[k] for k in kinds], dtype=float)
    draws = np.searchsorted(np.cumsum(shares), rng.random(num_examples))
    size = grid.image_size
    images = np.empty((num_examples, size, size, 3), np.uint8)
    prompts, responses = [], []
    for i, draw in enumerate(draws):
        kind = kinds[min(int(draw), len(kinds) - 1)]
        if kind == "single":
            example = _single_example(rng, grid)
        elif kind == "count":
            example = _count_example(rng, grid)
        elif kind == "digit":
            example = _digit_example(rng, grid, train_pool)
        elif kind == "place":
            example = _place_example(rng, grid)
        elif kind == "relation":
            example = _relation_example(rng, grid)
        elif kind == "larger":
            example = _larger_example(rng, grid)
        else:
            example = _options_example(rng, grid)
        images[i], prompt, response = example
        prompts.append(prompt)
        responses.append(response)
    return _as_split(images, prompts, responses)


def perception_probe(
    perception,
    num_examples,
    image_size=DEFAULT_IMAGE_SIZE,
    seed=0,
    patch_size=DEFAULT_PATCH_SIZE,
):
    """Fresh generic questions on one perception of the pretraining world.

    What the base is asked in pretraining, in its generic phrasings, on
    examples drawn from a stream of their own (never the mixture's): a
    base's accuracy on them is what it perceives, before any task.

    Args:
        perception: str. One of `PERCEPTIONS`: `"color"`, `"shape"`,
            `"size"`, `"count"`, `"relation"` (where a named object of two
            lies), `"digit"` (rendered and handwritten), `"larger"`
            (which of 2-3 named shapes is larger or smaller) or
            `"options"` (the same, as multiple choice answered with the
            option's letter); or
            `"rendered digit"` / `"handwritten digit"`, the two halves of
            `"digit"` apart (the perceptions of `digits` and
            `sklearn_digits`), or `"color at side"`, the colour of the one
            of two objects that lies in a named half.
        num_examples: int. Number of examples.
        image_size: int. Image side. Defaults to `64`.
        seed: int. Random seed. Defaults to `0`.
        patch_size: int. The ViT patch side. Defaults to `16`.

    Returns:
        A split dict with `"images"`, `"prompts"` and `"responses"`.

    Example:

    ```python
    from keras_pam.datasets.generated import perception_probe

    probe = perception_probe("relation", 4)
    print(probe["prompts"][0], probe["responses"][0])
    ```
    """
    known = PERCEPTIONS + tuple(_DIGIT_SOURCES) + ("color at side",)
    if perception not in known:
        raise ValueError(
            f"Unknown perception {perception!r}. Known: {', '.join(known)}."
        )
    grid = _check_sizes(image_size, patch_size, num_examples=num_examples)
    rng = _rng(seed, "probe " + perception, "test")
    # Handwritten digits from the test pool: images pretraining never saw.
    test_pool, _ = _sklearn_pools()
    size = grid.image_size
    images = np.empty((num_examples, size, size, 3), np.uint8)
    prompts, responses = [], []
    for i in range(num_examples):
        if perception in ("color", "shape", "size"):
            example = _single_example(rng, grid, perception)
        elif perception == "count":
            example = _count_example(rng, grid, caption=False)
        elif perception == "digit":
            example = _digit_example(rng, grid, test_pool, caption=False)
        elif perception in _DIGIT_SOURCES:
            example = _digit_example(
                rng, grid, test_pool, False, _DIGIT_SOURCES[perception]
            )
        elif perception == "relation":
            example = _relation_example(rng, grid, "side")
        elif perception == "color at side":
            example = _relation_example(rng, grid, "color")
        elif perception == "larger":
            example = _larger_example(rng, grid, caption=False)
        else:
            example = _options_example(rng, grid, "size")
        images[i], prompt, response = example
        prompts.append(prompt)
        responses.append(response)
    return _as_split(images, prompts, responses)
