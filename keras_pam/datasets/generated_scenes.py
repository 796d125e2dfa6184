"""The generated suite's world: colours, shapes, digits, prompts, the
drawing of objects in grid cells, and the assembly of a split."""

import zlib

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_pam.datasets.grid_world import DEFAULT_PATCH_SIZE
from keras_pam.datasets.grid_world import Grid
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


def _many_objects(rng, grid, count):
    cells = grid.distinct_cells(rng, count)
    objects = _objects_in_cells(rng, grid, cells)
    return _render(grid.image_size, _background(rng), objects)


def _opposite_halves(grid, horizontal):
    """An `accept` for two cells in different halves along one axis."""
    middle = (grid.cells - 1) / 2

    def accept(cells):
        index = [grid.row_column(c)[1 if horizontal else 0] for c in cells]
        if any(abs(i - middle) < 0.5 for i in index):
            return False  # The middle column (row) of an odd grid.
        return (index[0] < middle) != (index[1] < middle)

    return accept


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


def _options_prompt(question, options):
    listed = " ".join(
        f"{OPTION_LETTERS[i]}: {o}" for i, o in enumerate(options)
    )
    return f"{VQA_PREFIX}{question} {listed}\n"


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
