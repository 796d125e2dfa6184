"""The four tasks of the extended CoIN sequence: `mix_choice`, `facts`,
`diagram` and `land_cover` (textured overhead tiles)."""

import itertools

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_pam.datasets.generated_scenes import _SCENE_RADIUS
from keras_pam.datasets.generated_scenes import COLOR_NAMES
from keras_pam.datasets.generated_scenes import COLORS
from keras_pam.datasets.generated_scenes import NUMBER_WORDS
from keras_pam.datasets.generated_scenes import OPTION_LETTERS
from keras_pam.datasets.generated_scenes import SHAPES
from keras_pam.datasets.generated_scenes import VQA_PREFIX
from keras_pam.datasets.generated_scenes import _draw_shape
from keras_pam.datasets.generated_scenes import _options_prompt
from keras_pam.datasets.generated_scenes import _single_object

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


def _one_shape(rng, grid, color, shapes=SHAPES):
    """A single shape of the given colour whole inside a random cell."""
    image, shape, _, _, _ = _single_object(rng, grid, color, shapes)
    return image, shape


# `mix_choice` and `diagram` ask with two options, as `choice` does and
# for its reason (`CHOICE_OPTIONS`): with three, their adapters on the tiny
# base stayed near chance (33.8 % and 59.8 % after their own training).


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
    options = [answer, alternative]
    order = [int(i) for i in rng.permutation(len(options))]
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
    # The options are the arrow's two ends; the third shape is only in the
    # picture, so the arrow's direction, not its reach, is what is asked.
    order = [int(i) for i in rng.permutation(2)]
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
