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
| `mix_choice` | AOKVQA-MC | which color is it mixed with .. | a, b, c | exact |
| `land_cover` | RSVQA-lr | is there water .. | yes, no, zero .. five | exact |
| `facts` | OKVQA | what is the opposite color of .. | colours, numbers | vqa |
| `diagram` | AI2D | which shape does the arrow point to .. | a, b, c | exact |

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

import functools
import itertools
import zlib

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_pam.datasets.grid_world import DEFAULT_IMAGE_SIZE
from keras_pam.datasets.grid_world import DEFAULT_PATCH_SIZE
from keras_pam.datasets.grid_world import Grid
from keras_pam.datasets.registry import COIN_ORDERS
from keras_pam.datasets.registry import EXTENDED_COIN_ORDER
from keras_pam.datasets.registry import Task
from keras_pam.datasets.registry import object_array

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (50, 95, 235),
    "yellow": (235, 215, 40),
    "purple": (155, 65, 205),
    "orange": (245, 140, 30),
}
COLOR_NAMES = tuple(COLORS)
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
SIDES = ("left", "right", "top", "bottom")
OPTION_LETTERS = ("a", "b", "c")
MAX_COUNT = 5
NUM_ANNOTATORS = 10

VQA_PREFIX = "answer en "
CAPTION_PROMPT = "caption en\n"

COLOR_PROMPT = VQA_PREFIX + "what color is the shape\n"
SHAPE_PROMPT = VQA_PREFIX + "what shape is it\n"
COUNT_PROMPT = VQA_PREFIX + "how many shapes are there\n"
DIGITS_PROMPT = VQA_PREFIX + "what digit is written\n"
SKLEARN_DIGITS_PROMPT = VQA_PREFIX + "what digit is this\n"

# 5x7 glyphs of the digits 0-9, "#" is ink.
_GLYPH_ROWS = (
    (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    ("####.", "....#", "....#", ".###.", "....#", "....#", "####."),
    ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
)
GLYPHS = np.array(
    [[[c == "#" for c in row] for row in glyph] for glyph in _GLYPH_ROWS]
)

_SPLIT_STREAMS = {"train": 0, "test": 1, "pretraining": 2}


def _rng(seed, name, stream):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    return np.random.default_rng(
        [int(seed), zlib.crc32(name.encode("utf-8")), _SPLIT_STREAMS[stream]]
    )


def _background(rng):
    level = int(rng.integers(0, 80))
    tint = rng.integers(-12, 13, size=3)
    return tuple(int(v) for v in np.clip(level + tint, 0, 255))


def _draw_shape(draw, shape, cx, cy, r, fill):
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon(((cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)), fill)
    elif shape == "diamond":
        points = ((cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy))
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        t = max(1, round(r / 3))
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    else:
        raise ValueError(f"Unknown shape {shape!r}.")


def _render(size, background, objects):
    """Draws `(shape, color_name, cx, cy, r)` objects on a plain image."""
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for shape, color, cx, cy, r in objects:
        _draw_shape(draw, shape, cx, cy, r, COLORS[color])
    return np.asarray(image, dtype=np.uint8)


# Radii as fractions of a cell's side (`Grid.radius`): a single shape as
# large as its cell allows, the shapes of a crowded scene a little smaller.
_SINGLE_RADIUS = (0.28, 0.5)
_SCENE_RADIUS = (0.25, 0.38)


def _objects_in_cells(rng, grid, cells, radius=_SCENE_RADIUS, colors=None):
    """A shape in each of `cells`: `(shape, color, cx, cy, r)` tuples."""
    if colors is None:
        colors = [COLOR_NAMES[rng.integers(len(COLOR_NAMES))] for _ in cells]
    objects = []
    for cell, color in zip(cells, colors, strict=True):
        r = radius if isinstance(radius, int) else grid.radius(rng, *radius)
        cx, cy = grid.centre(rng, cell, r)
        objects.append((SHAPES[rng.integers(len(SHAPES))], color, cx, cy, r))
    return objects


def _single_object(rng, grid, color=None, shapes=SHAPES, radius=None):
    """One shape whole inside a random cell: `(image, shape, color, r,
    cell)`."""
    shape = shapes[rng.integers(len(shapes))]
    if color is None:
        color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    r = grid.radius(rng, *_SINGLE_RADIUS) if radius is None else radius
    (cell,) = grid.distinct_cells(rng, 1)
    cx, cy = grid.centre(rng, cell, r)
    image = _render(
        grid.image_size, _background(rng), [(shape, color, cx, cy, r)]
    )
    return image, shape, color, r, cell


def _gen_color(rng, grid):
    image, _, color, _, _ = _single_object(rng, grid)
    return image, COLOR_PROMPT, color


def _gen_shape(rng, grid):
    image, shape, _, _, _ = _single_object(rng, grid)
    return image, SHAPE_PROMPT, shape


def _many_objects(rng, grid, count):
    cells = grid.distinct_cells(rng, count)
    objects = _objects_in_cells(rng, grid, cells)
    return _render(grid.image_size, _background(rng), objects)


def _gen_count(rng, grid):
    count = int(rng.integers(1, MAX_COUNT + 1))
    return _many_objects(rng, grid, count), COUNT_PROMPT, NUMBER_WORDS[count]


def _position_prompt(color, horizontal):
    if horizontal:
        question = f"is the {color} shape on the left or the right"
    else:
        question = f"is the {color} shape at the top or the bottom"
    return VQA_PREFIX + question + "\n"


def _opposite_halves(grid, horizontal):
    """An `accept` for two cells in different halves along one axis."""
    middle = (grid.cells - 1) / 2

    def accept(cells):
        index = [grid.row_column(c)[1 if horizontal else 0] for c in cells]
        if any(abs(i - middle) < 0.5 for i in index):
            return False  # The middle column (row) of an odd grid.
        return (index[0] < middle) != (index[1] < middle)

    return accept


def _two_named_objects(rng, grid, horizontal):
    """Two shapes of different colours in opposite halves of the image.

    Both halves are always occupied, so the answer depends on which
    object the question names: a model must bind the colour to its place.
    """
    cells = grid.distinct_cells(rng, 2, _opposite_halves(grid, horizontal))
    colors = [COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), 2, False)]
    objects = _objects_in_cells(rng, grid, cells, colors=colors)
    image = _render(grid.image_size, _background(rng), objects)
    return image, colors[0], grid.side(cells[0], horizontal)


def _gen_position(rng, grid):
    horizontal = bool(rng.random() < 0.5)
    image, color, side = _two_named_objects(rng, grid, horizontal)
    return image, _position_prompt(color, horizontal), side


def _digit_image(rng, grid, digit):
    """A rendered glyph whole inside one random cell."""
    glyph = GLYPHS[digit]
    # As large as a cell allows: 2 pixels a stroke in a 16-pixel cell.
    scale = max(1, (grid.patch_size - 2) // 7)
    pixels = np.kron(glyph, np.ones((scale, scale), dtype=bool))
    (cell,) = grid.distinct_cells(rng, 1)
    top, left = grid.box(rng, cell, *pixels.shape)
    image = np.empty((grid.image_size, grid.image_size, 3), dtype=np.uint8)
    image[...] = _background(rng)
    ink = COLORS[COLOR_NAMES[rng.integers(len(COLOR_NAMES))]]
    if rng.random() < 0.3:
        ink = (240, 240, 240)
    height, width = pixels.shape
    window = image[top : top + height, left : left + width]
    window[pixels] = ink
    return image


def _gen_digits(rng, grid):
    digit = int(rng.integers(10))
    return _digit_image(rng, grid, digit), DIGITS_PROMPT, NUMBER_WORDS[digit]


def _choice_prompt(options, biggest):
    if len(options) == 2:
        question = "which is bigger?" if biggest else "which is smaller?"
    else:
        question = (
            "which is the biggest?" if biggest else "which is the smallest?"
        )
    listed = " ".join(
        f"{OPTION_LETTERS[i]}: {o}" for i, o in enumerate(options)
    )
    return f"{VQA_PREFIX}{question} {listed}\n"


def _size_levels(grid, n):
    """Radii of `n` clearly different sizes, each whole inside a cell.

    Successive radii differ by a factor of at least 1.75, so the larger
    shape covers more pixels whatever the two shapes are (a square of
    radius 4 has fewer pixels than a diamond of radius 7).
    """
    big = grid.max_radius
    if n == 2:
        return [max(1, round(0.4 * big)), big]
    small = max(1, round(0.3 * big))
    return [small, round((small * big) ** 0.5), big]


# Two options, not three: with three, the task's adapter on the tiny base
# stays near the base's zero-shot answer (0.55 against 0.52), 0.49-0.68
# even when the options name colours, though the base says which colour is
# the largest at 1.0. Finding the option that names what it perceives and
# answering that option's letter is a lookup its three-layer decoder does
# not learn from a task's few hundred examples; with two options the
# adapter reads 0.97-0.98 on colours (`benchmarks/choice_options.py`).
CHOICE_OPTIONS = 2


def _gen_choice(rng, grid, num_options=CHOICE_OPTIONS):
    n = num_options
    if n not in (2, 3):
        raise ValueError(f"`num_options` must be 2 or 3, got {n!r}.")
    if n == 3 and grid.patch_size < 16:
        raise ValueError(
            "Three sizes 1.75 times apart do not fit a cell under 16 "
            f"pixels; this grid's cells are {grid.patch_size}."
        )
    radii = [int(r) for r in rng.permutation(_size_levels(grid, n))]
    cells = grid.distinct_cells(rng, n)
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), n, replace=False)]
    colors = [
        COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), n, replace=False)
    ]
    objects = [
        (s, c, *grid.centre(rng, cell, r), r)
        for s, c, cell, r in zip(shapes, colors, cells, radii, strict=True)
    ]
    image = _render(grid.image_size, _background(rng), objects)
    biggest = bool(rng.random() < 0.5)
    target = int(np.argmax(radii) if biggest else np.argmin(radii))
    names = shapes if rng.random() < 0.5 else colors
    order = [int(i) for i in rng.permutation(n)]
    options = [names[i] for i in order]
    answer = OPTION_LETTERS[order.index(target)]
    return image, _choice_prompt(options, biggest), answer


@functools.lru_cache(maxsize=1)
def _sklearn_digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    return images, data.target.astype(np.int64)


# The scikit-learn digits are split once, whatever the task seed: the first
# `SKLEARN_TEST_POOL_SIZE` images of a fixed permutation are the only ones a
# test split draws from, and the pretraining mixture never uses them.
SKLEARN_TEST_POOL_SIZE = 1797 // 5


@functools.lru_cache(maxsize=1)
def _sklearn_pools():
    images, _ = _sklearn_digits()
    permutation = np.random.default_rng(
        zlib.crc32(b"sklearn_digits pools")
    ).permutation(len(images))
    return (
        permutation[:SKLEARN_TEST_POOL_SIZE],
        permutation[SKLEARN_TEST_POOL_SIZE:],
    )


def _sklearn_image(rng, grid, index):
    """A scikit-learn 8x8 digit, scaled up whole into one random cell."""
    images, _ = _sklearn_digits()
    side = max(8, grid.patch_size - 2)
    small = Image.fromarray(images[index])
    gray = np.asarray(small.resize((side, side), Image.BILINEAR))
    image = np.empty((grid.image_size, grid.image_size, 3), dtype=np.uint8)
    image[...] = _background(rng)
    (cell,) = grid.distinct_cells(rng, 1)
    top, left = grid.box(rng, cell, side, side)
    window = image[top : top + side, left : left + side]
    window[...] = np.maximum(window, gray[..., None])
    return image


def _sklearn_split(indices, grid, rng):
    _, targets = _sklearn_digits()
    size = grid.image_size
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    for i, index in enumerate(indices):
        out[i] = _sklearn_image(rng, grid, index)
    responses = [NUMBER_WORDS[targets[i]] for i in indices]
    return _as_split(out, [SKLEARN_DIGITS_PROMPT] * len(indices), responses)


def _sklearn_indices(pool, num, rng):
    """`num` indices drawn from `pool`, each used once before any repeats."""
    rounds = -(-num // len(pool)) if num else 0
    picks = [rng.permutation(pool) for _ in range(rounds)]
    return np.concatenate(picks)[:num] if picks else np.zeros(0, np.int64)


def _make_sklearn_task(num_train, num_test, grid, seed):
    test_pool, train_pool = _sklearn_pools()
    rng = _rng(seed, "sklearn_digits", "train")
    test_rng = _rng(seed, "sklearn_digits", "test")
    test_indices = _sklearn_indices(test_pool, num_test, test_rng)
    test = _sklearn_split(test_indices, grid, test_rng)
    train_indices = _sklearn_indices(train_pool, num_train, rng)
    train = _sklearn_split(train_indices, grid, rng)
    return train, test


def _as_split(images, prompts, responses):
    return {
        "images": np.asarray(images, dtype=np.uint8),
        "prompts": object_array(prompts),
        "responses": object_array(responses),
    }


def _generate(generator, num, grid, rng, exclude=None):
    """Runs `generator` until `num` examples not in `exclude` are drawn."""
    size = grid.image_size
    images = np.empty((num, size, size, 3), dtype=np.uint8)
    prompts, responses, keys = [], [], set()
    i = 0
    while i < num:
        image, prompt, response = generator(rng, grid)
        key = (image.tobytes(), prompt)
        if exclude is not None and key in exclude:
            continue
        images[i] = image
        prompts.append(prompt)
        responses.append(response)
        keys.add(key)
        i += 1
    return _as_split(images, prompts, responses), keys


# The extended CoIN sequence: AOKVQA-MC, RSVQA-lr, OKVQA and AI2D analogues.

YES_NO = ("yes", "no")

# The painter's (RYB) colour mixing, the outside fact of `mix_choice`: the
# mix of two primary colours, keyed by the pair in alphabetical order.
PRIMARY_COLORS = ("red", "yellow", "blue")
COLOR_MIXES = {
    ("red", "yellow"): "orange",
    ("blue", "yellow"): "green",
    ("blue", "red"): "purple",
}
# The complementary colours of the painter's colour wheel and the corners
# of a shape, the outside facts of `facts`. A cross has twelve corners, a
# word the shipped tokenizer does not know, so `facts` never asks a cross's.
OPPOSITE_COLORS = {
    "red": "green",
    "green": "red",
    "yellow": "purple",
    "purple": "yellow",
    "blue": "orange",
    "orange": "blue",
}
SHAPE_CORNERS = {
    "circle": "zero",
    "triangle": "three",
    "square": "four",
    "diamond": "four",
}
# `land_cover` counts at most this many buildings and roads.
MAX_BUILDINGS = 5
MAX_ROADS = 3

MIX_QUESTION = "which color is it mixed with {}"
OPPOSITE_PROMPT = VQA_PREFIX + "what is the opposite color of the shape\n"
CORNERS_PROMPT = VQA_PREFIX + "how many corners does the shape have\n"
DIAGRAM_QUESTIONS = {
    "target": "which shape does the arrow point to",
    "source": "which shape does the arrow come from",
}
# The four question kinds of `land_cover`, after RSVQA-lr's presence,
# count, comparison and rural/urban questions: water anywhere (yes/no), the
# number of buildings (zero .. five), more buildings than roads (yes/no),
# and urban, i.e. at least three buildings and a road (yes/no).
URBAN_MIN_BUILDINGS = 3
LAND_COVER_PROMPTS = {
    "water": VQA_PREFIX + "is there water in the image\n",
    "buildings": VQA_PREFIX + "how many buildings are there\n",
    "compare": VQA_PREFIX + "are there more buildings than roads\n",
    "urban": VQA_PREFIX + "is it an urban area\n",
}


def _options_prompt(question, options):
    listed = " ".join(
        f"{OPTION_LETTERS[i]}: {o}" for i, o in enumerate(options)
    )
    return f"{VQA_PREFIX}{question} {listed}\n"


def _one_shape(rng, grid, color, shapes=SHAPES):
    """A single shape of the given colour whole inside a random cell."""
    image, shape, _, _, _ = _single_object(rng, grid, color, shapes)
    return image, shape


def _gen_mix_choice(rng, grid):
    """AOKVQA-MC: the picture's colour mixed with a named one (a fact)."""
    color = PRIMARY_COLORS[rng.integers(len(PRIMARY_COLORS))]
    others = [c for c in PRIMARY_COLORS if c != color]
    partner = others[rng.integers(2)]
    (third,) = [c for c in others if c != partner]
    image, _ = _one_shape(rng, grid, color)
    answer = COLOR_MIXES[tuple(sorted((color, partner)))]
    # The mix the other possible picture would give: without the picture
    # the question is a coin flip between the two.
    alternative = COLOR_MIXES[tuple(sorted((third, partner)))]
    rest = [c for c in COLOR_NAMES if c not in (answer, alternative)]
    options = [answer, alternative, rest[rng.integers(len(rest))]]
    order = [int(i) for i in rng.permutation(3)]
    options = [options[i] for i in order]
    prompt = _options_prompt(MIX_QUESTION.format(partner), options)
    return image, prompt, OPTION_LETTERS[order.index(0)]


def _gen_facts(rng, grid):
    """OKVQA: an open answer from the picture and a fact of the world."""
    if rng.random() < 0.5:
        color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
        image, _ = _one_shape(rng, grid, color)
        return image, OPPOSITE_PROMPT, OPPOSITE_COLORS[color]
    color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    image, shape = _one_shape(rng, grid, color, tuple(SHAPE_CORNERS))
    return image, CORNERS_PROMPT, SHAPE_CORNERS[shape]


def _segment_distance(p, a, b):
    """Distance from point `p` to the segment `a`-`b`."""
    p, a, b = (np.asarray(v, float) for v in (p, a, b))
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-9), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def _gen_diagram(rng, grid):
    """AI2D: three shapes on a page, an arrow from one to another.

    Each shape is whole inside its own cell; the arrow joins two cells at
    least one cell apart and passes clear of the third shape.
    """
    size = grid.image_size
    radii = [grid.radius(rng, *_SCENE_RADIUS) for _ in range(3)]
    head = max(3, round(0.3 * grid.patch_size))
    half = max(2, round(0.18 * grid.patch_size))

    def accept(cells):
        (a, b, c) = (np.array(grid.row_column(x)[::-1], float) for x in cells)
        apart = np.abs(a - b).max() >= 2
        return apart and _segment_distance(c, a, b) >= 0.9

    cells = grid.distinct_cells(rng, 3, accept=accept)
    (a, b, c) = (
        grid.centre(rng, cell, r) for cell, r in zip(cells, radii, strict=True)
    )
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), 3, replace=False)]
    colors = [
        COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), 3, replace=False)
    ]
    tint = int(rng.integers(225, 256))
    image = Image.new("RGB", (size, size), (tint, tint, tint - 8))
    draw = ImageDraw.Draw(image)
    for shape, color, (cx, cy), r in zip(
        shapes, colors, (a, b, c), radii, strict=True
    ):
        _draw_shape(draw, shape, cx, cy, r, COLORS[color])
    # The arrow: from shape 0's edge to shape 1's edge, its head at 1.
    u = np.array(b, float) - np.array(a, float)
    u /= np.linalg.norm(u)
    normal = np.array([-u[1], u[0]])
    start = np.array(a, float) + u * (radii[0] + 1)
    tip = np.array(b, float) - u * (radii[1] + 1)
    base = tip - u * head
    ink = (20, 20, 20)
    width = max(1, grid.patch_size // 8)
    draw.line([tuple(start), tuple(base)], fill=ink, width=width)
    wings = (tuple(base + normal * half), tuple(base - normal * half))
    draw.polygon([tuple(tip), *wings], fill=ink)
    kind = "target" if rng.random() < 0.5 else "source"
    names = shapes if rng.random() < 0.5 else colors
    order = [int(i) for i in rng.permutation(3)]
    options = [names[i] for i in order]
    answer = OPTION_LETTERS[order.index(1 if kind == "target" else 0)]
    prompt = _options_prompt(DIAGRAM_QUESTIONS[kind], options)
    return np.asarray(image, dtype=np.uint8), prompt, answer


# Overhead "satellite" colours of `land_cover`.
_FIELD_TONES = (
    (72, 110, 48),
    (96, 128, 52),
    (122, 112, 64),
    (86, 96, 42),
    (140, 128, 78),
    (60, 92, 58),
)
_WATER = (36, 72, 118)
_ROAD = (150, 148, 142)
_ROOFS = ((214, 212, 206), (186, 84, 62), (232, 228, 214))


def _noise_field(rng, size, cells, amplitude):
    """Smooth noise: a coarse random grid upsampled to the image."""
    coarse = rng.normal(0.0, amplitude, (cells, cells))
    image = Image.fromarray(coarse.astype(np.float32))
    return np.asarray(image.resize((size, size), Image.BILINEAR))


def _fields(rng, size):
    """A patchwork of fields, each a tone with smooth and fine noise."""
    cuts = []
    for _ in range(2):
        n = int(rng.integers(1, 3))
        inner = rng.choice(np.arange(size // 5, size - size // 5), n, False)
        cuts.append([0] + sorted(int(v) for v in inner) + [size])
    ground = np.empty((size, size, 3), np.float32)
    for y0, y1 in itertools.pairwise(cuts[0]):
        for x0, x1 in itertools.pairwise(cuts[1]):
            tone = np.array(_FIELD_TONES[rng.integers(len(_FIELD_TONES))])
            ground[y0:y1, x0:x1] = tone + rng.integers(-10, 11, 3)
    ground += _noise_field(rng, size, 4, 10.0)[..., None]
    ground += rng.normal(0.0, 7.0, (size, size, 3))
    return ground


def _water_mask(rng, size):
    """A lake (a noisy ellipse) or a river (a wavy band)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wobble = _noise_field(rng, size, 4, 0.12)
    if rng.random() < 0.5:
        cx, cy = rng.uniform(0.25, 0.75, 2) * size
        rx, ry = rng.uniform(0.15, 0.28, 2) * size
        distance = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        return distance + wobble < 1.0
    along, across = (x, y) if rng.random() < 0.5 else (y, x)
    centre = rng.uniform(0.3, 0.7) * size
    amplitude = rng.uniform(0.05, 0.15) * size
    phase = rng.uniform(0, 2 * np.pi)
    course = centre + amplitude * np.sin(2 * np.pi * along / size + phase)
    width = max(2.0, rng.uniform(0.07, 0.12) * size)
    return np.abs(across - course) < width * (1 + wobble)


def _roads(rng, size, count):
    """`count` straight roads across the tile, parallel ones apart."""
    width = max(1, size // 24)
    mask = np.zeros((size, size), bool)
    used = {"h": [], "v": []}
    margin = max(2, size // 8)
    spacing = max(4, size // 5)
    for _ in range(count):
        for _ in range(100):
            axis = "h" if rng.random() < 0.5 else "v"
            at = int(rng.integers(margin, size - margin - width + 1))
            if all(abs(at - other) >= spacing for other in used[axis]):
                break
        else:
            return None
        used[axis].append(at)
        if axis == "h":
            mask[at : at + width, :] = True
        else:
            mask[:, at : at + width] = True
    return mask


def _dilate(mask, steps):
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _buildings(rng, grid, count, blocked):
    """`count` square roofs on free land, each whole in a cell of its own."""
    side = max(2, round(grid.patch_size / 3))
    taken = blocked.copy()
    corners = []
    for cell in rng.permutation(grid.num_cells):
        if len(corners) == count:
            break
        for _ in range(10):
            y, x = grid.box(rng, cell, side, side)
            if not taken[y : y + side, x : x + side].any():
                corners.append((y, x))
                taken |= _dilate(_square_mask(grid.image_size, y, x, side), 2)
                break
    if len(corners) < count:
        return None
    return corners, side


def _square_mask(size, y, x, side):
    mask = np.zeros((size, size), bool)
    mask[y : y + side, x : x + side] = True
    return mask


def _land_cover_scene(rng, grid):
    """An overhead tile: fields, maybe water, roads and buildings."""
    size = grid.image_size
    while True:
        ground = _fields(rng, size)
        has_water = bool(rng.random() < 0.5)
        num_roads = int(rng.integers(0, MAX_ROADS + 1))
        num_buildings = int(rng.integers(0, MAX_BUILDINGS + 1))
        water = (
            _water_mask(rng, size)
            if has_water
            else np.zeros((size, size), bool)
        )
        if has_water and water.mean() < 0.04:
            continue
        roads = _roads(rng, size, num_roads)
        if roads is None:
            continue
        placed = _buildings(rng, grid, num_buildings, _dilate(water | roads, 1))
        if placed is None:
            continue
        break
    corners, side = placed
    image = ground
    image[water] = _WATER + rng.normal(0.0, 5.0, (int(water.sum()), 3))
    image[roads] = _ROAD + rng.normal(0.0, 4.0, (int(roads.sum()), 3))
    for y, x in corners:
        roof = _ROOFS[rng.integers(len(_ROOFS))]
        image[y : y + side, x : x + side] = roof
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image, has_water, num_roads, num_buildings


def _gen_land_cover(rng, grid):
    """RSVQA-lr: presence, count, comparison and urban/rural questions."""
    image, has_water, num_roads, num_buildings = _land_cover_scene(rng, grid)
    kind = tuple(LAND_COVER_PROMPTS)[rng.integers(len(LAND_COVER_PROMPTS))]
    if kind == "water":
        yes = has_water
    elif kind == "compare":
        yes = num_buildings > num_roads
    elif kind == "urban":
        yes = num_buildings >= URBAN_MIN_BUILDINGS and num_roads >= 1
    else:
        return image, LAND_COVER_PROMPTS[kind], NUMBER_WORDS[num_buildings]
    return image, LAND_COVER_PROMPTS[kind], "yes" if yes else "no"


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
    "mix_choice": OPTION_LETTERS,
    "land_cover": YES_NO + NUMBER_WORDS[: MAX_BUILDINGS + 1],
    "facts": COLOR_NAMES + tuple(dict.fromkeys(SHAPE_CORNERS.values())),
    "diagram": OPTION_LETTERS,
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


def _check_sizes(image_size, patch_size=DEFAULT_PATCH_SIZE, **counts):
    """The `Grid` of a task's images, after checking every size."""
    if isinstance(image_size, bool) or not isinstance(
        image_size, (int, np.integer)
    ):
        raise ValueError(f"image_size must be an int, got {image_size!r}.")
    grid = Grid(int(image_size), patch_size)
    for key, value in counts.items():
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{key} must be an int >= 0, got {value!r}.")
    return grid


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
