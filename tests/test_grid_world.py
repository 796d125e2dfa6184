"""The grid world of `keras_pam.datasets`: every object whole in one patch.

Checked from the pixels: the background is an image's most frequent
colour, and no foreground pixel on one side of a cell border (a pixel row
or column at a multiple of the patch size) touches a foreground pixel on
the other side, so no object straddles two patches. The answers that are
about places (`position`, `count`, the pretraining relations, the video
`direction`) are checked against where the objects are.
"""

import collections
import itertools
import re
import types

import numpy as np
import pytest
from PIL import Image
from PIL import ImageDraw
from scipy import ndimage

from keras_pam import datasets
from keras_pam.datasets import generated
from keras_pam.datasets import generated_video
from keras_pam.datasets import grid_world
from keras_pam.datasets.grid_world import Grid

GRIDS = [(64, 16), (32, 8)]
NUM = 40  # Examples per split, task and grid: the tests stay fast.
# Every object of these tasks lies whole inside one cell; `land_cover`'s
# fields, water and roads and `diagram`'s arrow cross cells on purpose.
IN_CELLS = tuple(
    n for n in datasets.ALL_TASK_NAMES if n not in ("land_cover", "diagram")
)
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
# Every perception a probe draws: `PERCEPTIONS` and the digit probes of
# the tasks (`"rendered digit"`, `"handwritten digit"`).
PROBES = tuple(
    dict.fromkeys(
        generated.PERCEPTIONS
        + tuple(getattr(generated, "TASK_PERCEPTIONS", {}).values())
    )
)


# Pixel helpers.


def _background(image):
    colors, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    return colors[np.argmax(counts)]


def _foreground(image):
    return (image != _background(image)).any(-1)


def _color_mask(image, color):
    return (image == np.array(generated.COLORS[color], np.uint8)).all(-1)


def _occupied_cells(image, patch):
    """The `(row, column)` cells holding foreground, after asserting that
    no object straddles a cell border."""
    mask = _foreground(image)
    size = mask.shape[0]
    for border in range(patch, size, patch):
        # 4-neighbours across the border line, column- then row-wise.
        assert not (mask[:, border - 1] & mask[:, border]).any(), (
            f"an object straddles the column border at x={border}"
        )
        assert not (mask[border - 1] & mask[border]).any(), (
            f"an object straddles the row border at y={border}"
        )
    # And no 8-connected piece of ink spans two cells (diagonal strokes).
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), int))
    for rows, columns in ndimage.find_objects(labels):
        assert rows.start // patch == (rows.stop - 1) // patch
        assert columns.start // patch == (columns.stop - 1) // patch
    ys, xs = np.nonzero(mask)
    return {(int(y) // patch, int(x) // patch) for y, x in zip(ys, xs)}


def _in_half(mask, side):
    """Whether every pixel of `mask` lies in the half `side` names."""
    size = mask.shape[0]
    axis = 1 if side in ("left", "right") else 0
    coordinates = np.nonzero(mask)[axis]
    assert coordinates.size
    if side in ("left", "top"):
        return bool(coordinates.max() < size / 2)
    return bool(coordinates.min() >= size / 2)


def _check_sides(image, color, side):
    """The `color` shape lies in the `side` half, the other object (of
    one other colour) in the opposite half."""
    named = _color_mask(image, color)
    assert named.any(), color
    assert _in_half(named, side), (color, side)
    other = _foreground(image) & ~named
    assert _in_half(other, OPPOSITE[side]), (color, side)
    (other_color,) = set(_pictured_colors(image)) - {color}
    assert np.array_equal(other, _color_mask(image, other_color))


def _pictured_colors(image):
    return [c for c in generated.COLORS if _color_mask(image, c).any()]


def _radius(mask):
    """The radius of the one shape of `mask` (its box is `2r + 1` wide)."""
    ys, xs = np.nonzero(mask)
    width, height = xs.max() - xs.min(), ys.max() - ys.min()
    assert width == height and width % 2 == 0, (width, height)
    return int(width // 2)


def _shapes_matching(mask):
    """The shapes that, drawn at `mask`'s place and radius, are `mask`."""
    r = _radius(mask)
    ys, xs = np.nonzero(mask)
    cx, cy = int(xs.min()) + r, int(ys.min()) + r
    found = set()
    for shape in generated.SHAPES:
        image = Image.new("L", mask.shape[::-1], 0)
        generated._draw_shape(ImageDraw.Draw(image), shape, cx, cy, r, 255)
        if np.array_equal(np.asarray(image) > 0, mask):
            found.add(shape)
    return found


def _check_size_word(word, r, patch):
    if word == "small":
        assert r <= 0.25 * patch, (word, r)
    elif word == "big":
        assert r >= 0.375 * patch, (word, r)
    else:
        raise AssertionError(f"not a size word: {word!r}")


def _check_larger(image, larger, smaller):
    assert larger != smaller
    big, small = (_radius(_color_mask(image, c)) for c in (larger, smaller))
    assert big > small, (larger, big, smaller, small)


def _check_single(image, color, shape=None):
    """One shape of `color`, all the foreground: its radius."""
    mask = _color_mask(image, color)
    assert np.array_equal(mask, _foreground(image)), color
    if shape is not None:
        assert shape in _shapes_matching(mask), shape
    return _radius(mask)


# Grid.


@pytest.mark.parametrize(
    "image_size, patch_size, message",
    [
        (64, 4, "patch_size must be >= 8"),
        (64, 7, "patch_size must be >= 8"),
        (64, -16, "patch_size must be >= 8"),
        (60, 16, "image_size 60 must be a multiple of patch_size 16"),
        (40, 8 * 3, "image_size 40 must be a multiple of patch_size 24"),
        (16, 16, "at least 3 patches a side"),
        (8, 8, "at least 3 patches a side"),
        (0, 8, "at least 3 patches a side"),
        (64.0, 16, "image_size must be an int, got 64.0"),
        (True, 16, "image_size must be an int, got True"),
        (64, "16", "patch_size must be an int, got '16'"),
        (64, None, "patch_size must be an int, got None"),
    ],
)
def test_grid_rejects_bad_sizes(image_size, patch_size, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Grid(image_size, patch_size)


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: datasets.make_task("color", 2, 1, **kw),
        lambda **kw: datasets.make_suite(tasks=["count"], num_train=2, **kw),
        lambda **kw: datasets.make_video_task("direction", 2, 1, **kw),
        lambda **kw: datasets.make_video_suite(num_train=2, **kw),
        lambda **kw: datasets.pretraining_mixture(2, **kw),
        lambda **kw: generated.perception_probe("relation", 2, **kw),
    ],
)
def test_every_generator_checks_its_grid(make):
    with pytest.raises(ValueError, match="must be a multiple of patch_size"):
        make(image_size=40, patch_size=16)
    with pytest.raises(ValueError, match="patch_size must be >= 8"):
        make(image_size=32, patch_size=4)
    with pytest.raises(ValueError, match="at least 3 patches"):
        make(image_size=16, patch_size=16)
    with pytest.raises(ValueError, match="image_size must be an int"):
        make(image_size=32.0, patch_size=8)


def test_grid_geometry():
    grid = Grid()
    assert (grid.image_size, grid.patch_size) == (64, 16)
    assert (grid.cells, grid.num_cells, grid.max_radius) == (4, 16, 7)
    small = Grid(32, 8)
    assert (small.cells, small.num_cells, small.max_radius) == (4, 16, 3)
    odd = Grid(48, 16)
    assert (odd.cells, odd.num_cells) == (3, 9)
    assert [grid.row_column(c) for c in (0, 3, 4, 15)] == [
        (0, 0),
        (0, 3),
        (1, 0),
        (3, 3),
    ]
    assert [grid.side(c, True) for c in range(4)] == [
        "left",
        "left",
        "right",
        "right",
    ]
    assert [grid.side(4 * r, False) for r in range(4)] == [
        "top",
        "top",
        "bottom",
        "bottom",
    ]
    rng = np.random.default_rng(0)
    for g in (grid, small, odd):
        for low, high in ((0.0, 1.0), (0.25, 0.38), (0.19, 0.5)):
            radii = {g.radius(rng, low, high) for _ in range(200)}
            assert min(radii) >= max(2, round(low * g.patch_size))
            assert max(radii) <= g.max_radius


@pytest.mark.parametrize("image_size, patch_size", GRIDS + [(48, 16)])
def test_centre_keeps_every_shape_inside_its_cell(image_size, patch_size):
    grid = Grid(image_size, patch_size)
    rng = np.random.default_rng(1)
    for cell in range(grid.num_cells):
        row, column = grid.row_column(cell)
        top, left = row * patch_size, column * patch_size
        for r in range(2, grid.max_radius + 1):
            centres = set()
            for _ in range(12):
                cx, cy = grid.centre(rng, cell, r)
                centres.add((cx, cy))
                assert left <= cx - r and cx + r < left + patch_size
                assert top <= cy - r and cy + r < top + patch_size
                shape = generated.SHAPES[rng.integers(len(generated.SHAPES))]
                image = generated._render(
                    image_size, (0, 0, 0), [(shape, "red", cx, cy, r)]
                )
                (only,) = _occupied_cells(image, patch_size)
                assert only == (row, column)
            if r <= patch_size // 2 - 3:
                assert len(centres) > 1  # Jittered inside the cell.


@pytest.mark.parametrize("image_size, patch_size", GRIDS)
def test_box_keeps_a_block_inside_its_cell(image_size, patch_size):
    grid = Grid(image_size, patch_size)
    rng = np.random.default_rng(2)
    for cell in range(grid.num_cells):
        row, column = grid.row_column(cell)
        for height, width in ((1, 1), (7, 5), (patch_size, patch_size - 2)):
            for _ in range(5):
                top, left = grid.box(rng, cell, height, width)
                assert row * patch_size <= top
                assert top + height <= (row + 1) * patch_size
                assert column * patch_size <= left
                assert left + width <= (column + 1) * patch_size
    message = f"A {patch_size + 1}x3 block does not fit a {patch_size}-pixel"
    with pytest.raises(ValueError, match=message):
        grid.box(rng, 0, patch_size + 1, 3)


def test_distinct_cells():
    grid = Grid(32, 8)
    rng = np.random.default_rng(3)
    for count in range(1, 6):
        cells = grid.distinct_cells(rng, count)
        assert len(set(cells)) == count
        assert all(0 <= c < grid.num_cells for c in cells)
    corner = grid.distinct_cells(rng, 2, accept=lambda c: 0 in c)
    assert 0 in corner
    with pytest.raises(RuntimeError, match="Could not choose 2 cells"):
        grid.distinct_cells(rng, 2, accept=lambda c: False, tries=5)


def test_check_tasks_fit_model():
    check = getattr(grid_world, "check_tasks_fit_model", None)
    if check is None:
        pytest.skip("no grid_world.check_tasks_fit_model")
    backbone = types.SimpleNamespace(image_size=32, vit_patch_size=8)
    fits = datasets.make_task("color", 1, 1, image_size=32, patch_size=8)
    loaded = datasets.Task("loaded", fits.train, fits.test, metric="exact")
    check([fits, loaded], backbone)
    wrong_size = datasets.make_task("shape", 1, 1, image_size=64, patch_size=8)
    with pytest.raises(ValueError, match="'shape' was drawn for 64x64"):
        check([fits, wrong_size], backbone)
    wrong_patch = datasets.make_task("color", 1, 1, image_size=32, patch_size=8)
    backbone = types.SimpleNamespace(image_size=32, vit_patch_size=16)
    with pytest.raises(ValueError, match="8-pixel patches"):
        check([wrong_patch], backbone)


# Every generated image: objects whole inside cells.


def _num_objects(name, prompt, answer):
    if name == "count":
        return generated.NUMBER_WORDS.index(answer)
    if name == "position":
        return 2
    if name == "choice":
        return len(re.findall(r"\b[abc]: ", prompt))
    return 1


@pytest.mark.parametrize("image_size, patch_size", GRIDS)
@pytest.mark.parametrize("name", IN_CELLS)
def test_task_objects_lie_whole_inside_cells(name, image_size, patch_size):
    task = datasets.make_task(
        name, NUM, NUM // 2, image_size, seed=7, patch_size=patch_size
    )
    assert (task.image_size, task.patch_size) == (image_size, patch_size)
    for split in (task.train, task.test):
        for image, prompt, answer in zip(
            split["images"], split["prompts"], split["responses"], strict=True
        ):
            cells = _occupied_cells(image, patch_size)
            # One cell per object: for `count`, the answer.
            assert len(cells) == _num_objects(name, prompt, answer), prompt


@pytest.mark.parametrize("image_size, patch_size", GRIDS)
def test_position_answer_is_where_the_named_shape_is(image_size, patch_size):
    task = datasets.make_task(
        "position", 100, 20, image_size, seed=3, patch_size=patch_size
    )
    asked = collections.Counter()
    for split in (task.train, task.test):
        for image, prompt, answer in zip(
            split["images"], split["prompts"], split["responses"], strict=True
        ):
            (color,) = [w for w in prompt.split() if w in generated.COLORS]
            horizontal = answer in ("left", "right")
            assert prompt == generated._position_prompt(color, horizontal)
            _check_sides(image, color, answer)
            asked[answer] += 1
    assert set(asked) == set(generated.SIDES)


@pytest.mark.parametrize("image_size, patch_size", [(48, 16), (72, 24)])
def test_position_on_an_odd_grid_leaves_the_middle_empty(
    image_size, patch_size
):
    task = datasets.make_task(
        "position", 40, 0, image_size, seed=1, patch_size=patch_size
    )
    middle = image_size // patch_size // 2
    for image, prompt, answer in zip(
        task.train["images"],
        task.train["prompts"],
        task.train["responses"],
        strict=True,
    ):
        cells = _occupied_cells(image, patch_size)
        axis = 1 if answer in ("left", "right") else 0
        assert middle not in {cell[axis] for cell in cells}
        (color,) = [w for w in prompt.split() if w in generated.COLORS]
        _check_sides(image, color, answer)


@pytest.mark.parametrize("image_size, patch_size", GRIDS)
def test_shape_and_color_answers_match_the_pixels(image_size, patch_size):
    for name in ("color", "shape"):
        task = datasets.make_task(
            name, NUM, 0, image_size, seed=2, patch_size=patch_size
        )
        for image, answer in zip(
            task.train["images"], task.train["responses"], strict=True
        ):
            if name == "color":
                _check_single(image, answer)
            else:
                (color,) = _pictured_colors(image)
                _check_single(image, color, answer)


@pytest.mark.parametrize("image_size, patch_size", GRIDS)
def test_every_shape_is_told_apart_from_the_others(image_size, patch_size):
    # A shape's pixels name it: no other shape draws the same pixels. (A
    # circle and a cross of radius 2 are the same 21 pixels.)
    task = datasets.make_task(
        "shape", 200, 0, image_size, seed=2, patch_size=patch_size
    )
    ambiguous = collections.Counter()
    for image, answer in zip(
        task.train["images"], task.train["responses"], strict=True
    ):
        found = _shapes_matching(_foreground(image))
        assert answer in found
        if len(found) > 1:
            ambiguous[tuple(sorted(found)), _radius(_foreground(image))] += 1
    assert not ambiguous, dict(ambiguous)


# The pretraining mixture and the perception probes.

_QUESTION_KINDS = {
    generated.VQA_PREFIX + q + "\n": kind
    for kind, phrasings in generated.PRETRAINING_QUESTIONS.items()
    for q in phrasings
}
_SIDE_QUESTION = re.compile(
    r"answer en is the (\w+) object in the "
    r"(left half or the right half|top half or the bottom half)\n"
)
_COLOR_AT_SIDE_QUESTION = re.compile(
    r"answer en what colour is the object in the (left|right|top|bottom) "
    r"half\n"
)
# Which named colour is the larger (smaller) of two, the largest
# (smallest) of three.
_LARGER_QUESTION = re.compile(
    r"answer en which is (larger|smaller) the (\w+) shape or the (\w+) "
    r"shape\n"
    r"|answer en which is the (largest|smallest) the (\w+) shape the (\w+) "
    r"shape or the (\w+) shape\n"
)
# Multiple choice in generic words, answered with an option's letter.
_OPTIONS_QUESTION = re.compile(
    r"answer en (.+?) a: (\w+) b: (\w+)(?: c: (\w+))?\n"
)
# What each phrasing of a multiple choice asks.
_OPTIONS_ASKED = {
    "choose the colour of the object": "color",
    "which colour is it?": "color",
    "choose the shape of the object": "shape",
    "which shape is it?": "shape",
    "choose the larger one": "larger",
    "which one of the two is bigger?": "larger",
    "choose the smaller one": "smaller",
    "which one of the two is smaller?": "smaller",
    "choose the largest one": "largest",
    "which one is the biggest?": "largest",
    "choose the smallest one": "smallest",
    "which one is the smallest?": "smallest",
}
_BIGGER_CAPTION = re.compile(r"the (\w+) shape is bigger than the (\w+) shape")
_PLACED = re.compile(r"(an?) (\w+) (\w+) (on|at) the (\w+)")
_SINGLE_CAPTION = re.compile(r"(an?) (?:(small|big) )?(\w+) (\w+)")
_EXTREMES = {"larger": max, "largest": max, "smaller": min, "smallest": min}


def _check_article(article, word):
    assert article == ("an" if word[0] in "aeiou" else "a"), (article, word)


def _check_caption(image, caption, patch):
    """Checks a caption against the pixels: `(objects, what it tells)`."""
    words = caption.split()
    if words[0] in ("digit", "handwritten"):
        assert len(words) == 2 and words[1] in generated.NUMBER_WORDS
        return 1, words[0]
    if words[0] in generated.NUMBER_WORDS:
        count = generated.NUMBER_WORDS.index(words[0])
        assert words[1:] == ["shape" if count == 1 else "shapes"], caption
        return count, "count"
    if match := _BIGGER_CAPTION.fullmatch(caption):
        _check_larger(image, *match.groups())
        return 2, "bigger"
    if " and " in caption:
        sides = []
        for phrase in caption.split(" and "):
            match = _PLACED.fullmatch(phrase)
            assert match, caption
            article, color, shape, preposition, side = match.groups()
            _check_article(article, color)
            assert preposition == ("on" if side in ("left", "right") else "at")
            mask = _color_mask(image, color)
            assert shape in _shapes_matching(mask), caption
            assert _in_half(mask, side), caption
            sides.append(side)
        assert OPPOSITE[sides[0]] == sides[1], caption
        return 2, "placed"
    match = _SINGLE_CAPTION.fullmatch(caption)
    assert match, caption
    article, size_word, color, shape = match.groups()
    _check_article(article, size_word or color)
    r = _check_single(image, color, shape)
    if size_word:
        _check_size_word(size_word, r, patch)
    return 1, "single"


def _sized_objects(image, patch):
    """`{colour: (radius, pixels)}` of 2-3 shapes of clearly different
    sizes, one colour each and all the foreground."""
    colors = _pictured_colors(image)
    # Three sizes far enough apart fit only a cell of 16 pixels or more.
    assert len(colors) in ((2, 3) if patch >= 16 else (2,)), colors
    mask = np.zeros(image.shape[:2], bool)
    sizes = {}
    for color in colors:
        own = _color_mask(image, color)
        sizes[color] = _radius(own), int(own.sum())
        mask |= own
    assert np.array_equal(mask, _foreground(image))
    # Every shape is larger than the next by its radius and its pixels, so
    # "larger" means one thing whatever the shapes are.
    radii = sorted(r for r, _ in sizes.values())
    assert len(set(radii)) == len(radii), sizes
    assert sorted(sizes.values()) == sorted(
        sizes.values(), key=lambda size: size[1]
    ), sizes
    assert len({pixels for _, pixels in sizes.values()}) == len(sizes), sizes
    return sizes


def _extreme(sizes, word):
    """The colour `word` ("larger", "smallest", ...) names in `sizes`."""
    return _EXTREMES[word](sizes, key=lambda color: sizes[color][0])


def _check_larger_question(image, match, answer, patch):
    """A larger/smaller question on two named colours, largest/smallest
    on three: the answer is the named colour of that size."""
    groups = [g for g in match.groups() if g is not None]
    word, named = groups[0], groups[1:]
    assert len(named) == (2 if word in ("larger", "smaller") else 3), groups
    assert len(set(named)) == len(named), named
    sizes = _sized_objects(image, patch)
    assert set(sizes) == set(named), (named, sizes)
    assert answer == _extreme(sizes, word), (word, named, answer, sizes)
    return len(named), word


def _check_options_question(image, match, answer, patch):
    """A multiple choice: `answer` is the letter of the option that names
    the object's colour or shape, or the larger (...) of 2-3 shapes."""
    question, *options = match.groups()
    options = [o for o in options if o is not None]
    assert len(set(options)) == len(options) in (2, 3), options
    letters = generated.OPTION_LETTERS[: len(options)]
    assert answer in letters, (answer, letters)
    chosen = options[letters.index(answer)]
    asked = _OPTIONS_ASKED[question]
    if asked == "color":
        assert set(options) <= set(generated.COLOR_NAMES), options
        _check_single(image, chosen)
        return 1, "color"
    if asked == "shape":
        assert set(options) <= set(generated.SHAPES), options
        (color,) = _pictured_colors(image)
        _check_single(image, color, chosen)
        # No other option is also the picture: one right answer.
        found = _shapes_matching(_color_mask(image, color))
        assert not found & (set(options) - {chosen}), (options, found)
        return 1, "shape"
    word = asked
    assert len(options) == (2 if word in ("larger", "smaller") else 3)
    sizes = _sized_objects(image, patch)
    target = _extreme(sizes, word)
    if set(options) <= set(generated.COLOR_NAMES):
        assert set(options) == set(sizes), (options, sizes)
        assert chosen == target, (word, options, answer, sizes)
        return len(options), "size by color"
    assert set(options) <= set(generated.SHAPES), options
    # Options named by shape: every way of matching the options to the
    # pictured shapes gives the chosen one the size asked for.
    found = {c: _shapes_matching(_color_mask(image, c)) for c in sizes}
    matchings = [
        dict(zip(options, colors, strict=True))
        for colors in itertools.permutations(sizes)
        if all(o in found[c] for o, c in zip(options, colors, strict=True))
    ]
    assert matchings, (options, found)
    for matching in matchings:
        assert matching[chosen] == target, (word, options, answer, found)
    return len(options), "size by shape"


def _check_pretraining_example(image, prompt, answer, patch):
    """Checks one example of the mixture or a probe against its pixels:
    `(kind, variant)`, what it asks."""
    cells = _occupied_cells(image, patch)
    if prompt == generated.CAPTION_PROMPT:
        expected, variant = _check_caption(image, answer, patch)
        kind = "caption"
    elif match := _SIDE_QUESTION.fullmatch(prompt):
        color, halves = match.groups()
        horizontal = halves.startswith("left")
        assert answer in (
            ("left", "right") if horizontal else ("top", "bottom")
        )
        named = _color_mask(image, color)
        if len(_pictured_colors(image)) == 1:
            # Where the only object lies.
            _check_single(image, color)
            assert _in_half(named, answer), (color, answer)
            expected, kind, variant = 1, "side", "single"
        elif _in_half(_foreground(image) & ~named, OPPOSITE[answer]):
            _check_sides(image, color, answer)
            expected, kind, variant = 2, "relation", "side"
        else:
            # Two objects in the same half: where the named one lies.
            assert _in_half(named, answer), (color, answer)
            assert len(_pictured_colors(image)) == 2
            expected, kind, variant = 2, "place", "same half"
    elif match := _COLOR_AT_SIDE_QUESTION.fullmatch(prompt):
        (side,) = match.groups()
        assert answer in generated.COLOR_NAMES, answer
        _check_sides(image, answer, side)
        expected, kind, variant = 2, "relation", "color"
    elif match := _LARGER_QUESTION.fullmatch(prompt):
        expected, variant = _check_larger_question(image, match, answer, patch)
        kind = "larger"
    elif match := _OPTIONS_QUESTION.fullmatch(prompt):
        expected, variant = _check_options_question(image, match, answer, patch)
        kind = "options"
    else:
        kind = _QUESTION_KINDS[prompt]
        expected, variant = 1, None
        if kind == "count":
            expected = generated.NUMBER_WORDS.index(answer)
        elif kind == "color":
            _check_single(image, answer)
        elif kind in ("shape", "size"):
            (color,) = _pictured_colors(image)
            r = _check_single(image, color, answer if kind == "shape" else None)
            if kind == "size":
                _check_size_word(answer, r, patch)
        else:
            assert kind == "digit" and answer in generated.NUMBER_WORDS
    assert len(cells) == expected, (prompt, answer)
    return kind, variant


def _sizes_asked(patch):
    """What a larger question asks: of three only where three fit."""
    words = {"larger", "smaller"}
    return words | ({"largest", "smallest"} if patch >= 16 else set())


@pytest.mark.parametrize("image_size, patch_size", GRIDS)
def test_pretraining_mixture_lies_in_cells_and_tells_the_truth(
    image_size, patch_size
):
    data = datasets.pretraining_mixture(
        300, image_size, seed=4, patch_size=patch_size
    )
    assert data["images"].shape == (300, image_size, image_size, 3)
    asked = collections.Counter(
        _check_pretraining_example(image, prompt, answer, patch_size)
        for image, prompt, answer in zip(
            data["images"], data["prompts"], data["responses"], strict=True
        )
    )
    # Every kind of question and caption of the design, and nothing else.
    expected = {(kind, None) for kind in generated.PRETRAINING_QUESTIONS}
    expected |= {
        ("caption", told)
        for told in ("digit", "handwritten", "count", "bigger", "placed")
    }
    expected |= {("caption", "single"), ("side", "single")}
    expected |= {("relation", "side"), ("relation", "color")}
    expected |= {("place", "same half")}
    expected |= {("larger", word) for word in _sizes_asked(patch_size)}
    expected |= {
        ("options", what)
        for what in ("color", "shape", "size by color", "size by shape")
    }
    assert set(asked) == expected, dict(asked)


def test_places_first_shares_draw_places_only():
    data = datasets.pretraining_mixture(
        200, seed=2, shares=generated.PLACES_FIRST_SHARES
    )
    asked = collections.Counter(
        _check_pretraining_example(image, prompt, answer, 16)[0]
        for image, prompt, answer in zip(
            data["images"], data["prompts"], data["responses"], strict=True
        )
    )
    # Single objects (what and where), relations and places, no digits,
    # counts or sizes compared.
    assert set(asked) <= {"caption", "color", "shape", "size", "side"} | {
        "relation",
        "place",
    }, dict(asked)
    assert asked["relation"] + asked["place"] + asked["side"] > 100


@pytest.mark.parametrize(
    "shares, message",
    [
        ({"single": 0.5, "smell": 0.5}, "Unknown mixture kinds"),
        ({"single": 0.5, "count": 0.4}, "sum to 1"),
        ({"single": 1.5, "count": -0.5}, ">= 0"),
        ({}, "non-empty dict"),
    ],
)
def test_pretraining_mixture_rejects_bad_shares(shares, message):
    with pytest.raises(ValueError, match=message):
        datasets.pretraining_mixture(4, shares=shares)


def test_default_shares_cover_every_kind():
    shares = generated.mixture_shares()
    assert set(shares) == set(generated.MIXTURE_KINDS)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert set(generated.PLACES_FIRST_SHARES) <= set(shares)


@pytest.mark.parametrize("image_size, patch_size", GRIDS)
@pytest.mark.parametrize("perception", PROBES)
def test_perception_probe_lies_in_cells(perception, image_size, patch_size):
    probe = generated.perception_probe(
        perception, 30, image_size, seed=5, patch_size=patch_size
    )
    assert probe["images"].shape == (30, image_size, image_size, 3)
    asked = {
        _check_pretraining_example(image, prompt, answer, patch_size)
        for image, prompt, answer in zip(
            probe["images"], probe["prompts"], probe["responses"], strict=True
        )
    }
    # Questions only, of the probe's one perception: "relation" where a
    # named colour of two lies, "larger" which named colour is the larger
    # (...), "options" the letter of the larger (...) shape.
    kind = "digit" if "digit" in perception else perception
    variants = {
        "relation": {"side"},
        "larger": _sizes_asked(patch_size),
        "options": {"size by color", "size by shape"},
    }.get(kind, {None})
    assert asked == {(kind, variant) for variant in variants}
    again = generated.perception_probe(
        perception, 30, image_size, seed=5, patch_size=patch_size
    )
    np.testing.assert_array_equal(again["images"], probe["images"])


def test_perception_probe_rejects_an_unknown_perception():
    with pytest.raises(ValueError, match="Unknown perception 'smell'"):
        generated.perception_probe("smell", 2)


# Video: shapes whole inside cells in every frame.


@pytest.mark.parametrize("image_size, patch_size", GRIDS)
@pytest.mark.parametrize("name", generated_video.VIDEO_TASK_NAMES)
def test_video_frames_keep_shapes_inside_cells(name, image_size, patch_size):
    task = datasets.make_video_task(
        name, 20, 10, image_size, num_frames=4, seed=2, patch_size=patch_size
    )
    assert (task.image_size, task.patch_size) == (image_size, patch_size)
    for split in (task.train, task.test):
        for clip in split["images"]:
            for frame in clip:
                cells = _occupied_cells(frame, patch_size)
                if name == "direction":
                    assert len(cells) == 1
                else:
                    # One or two shapes a frame, each in a cell of its own.
                    colors = _pictured_colors(frame)
                    assert len(cells) == len(colors) in (1, 2)


@pytest.mark.parametrize("image_size, patch_size", GRIDS + [(48, 16), (96, 24)])
def test_direction_moves_one_cell_a_frame(image_size, patch_size):
    task = datasets.make_video_task(
        "direction", 40, 10, image_size, 5, seed=3, patch_size=patch_size
    )
    cells = image_size // patch_size
    for split in (task.train, task.test):
        for clip, answer in zip(
            split["images"], split["responses"], strict=True
        ):
            dx, dy = generated_video.DIRECTIONS[answer]
            places = []
            for frame in clip:
                (place,) = _occupied_cells(frame, patch_size)
                places.append(place)
            for (row, column), (next_row, next_column) in itertools.pairwise(
                places
            ):
                assert (next_row - row) % cells == dy % cells, answer
                assert (next_column - column) % cells == dx % cells, answer
            for before, after in itertools.pairwise(clip):
                # The same pixels, one whole cell on (wrapping around).
                np.testing.assert_array_equal(
                    after,
                    np.roll(before, (dy * patch_size, dx * patch_size), (0, 1)),
                )


@pytest.mark.parametrize("image_size, patch_size", GRIDS + [(48, 16), (32, 16)])
def test_direction_clip_determines_its_answer(image_size, patch_size):
    # On a grid two cells wide, one cell left is one cell right: such a
    # grid must be refused for `direction`, or the clip would not answer.
    cells = image_size // patch_size
    try:
        task = datasets.make_video_task(
            "direction", 40, 0, image_size, 3, seed=0, patch_size=patch_size
        )
    except ValueError as error:
        assert cells < 3, error
        assert "patch" in str(error) or "image_size" in str(error)
        return
    for clip, answer in zip(
        task.train["images"], task.train["responses"], strict=True
    ):
        (first,), (second,) = (_occupied_cells(f, patch_size) for f in clip[:2])
        step = ((second[0] - first[0]) % cells, (second[1] - first[1]) % cells)
        consistent = {
            direction
            for direction, (dx, dy) in generated_video.DIRECTIONS.items()
            if (dy % cells, dx % cells) == step
        }
        assert consistent == {answer}, (answer, consistent)


# The smallest grid: two cells a side.


@pytest.mark.parametrize(
    "make",
    [
        *[
            pytest.param(
                lambda n=name: datasets.make_task(
                    n, 30, 10, image_size=32, patch_size=16
                ),
                id=name,
            )
            for name in datasets.ALL_TASK_NAMES
        ],
        *[
            pytest.param(
                lambda n=name: datasets.make_video_task(
                    n, 10, 5, image_size=32, num_frames=3, patch_size=16
                ),
                id=name,
            )
            for name in datasets.VIDEO_TASK_NAMES
        ],
        pytest.param(
            lambda: datasets.pretraining_mixture(
                200, image_size=32, patch_size=16
            ),
            id="pretraining_mixture",
        ),
    ],
)
def test_a_two_by_two_grid_works_or_is_refused_clearly(make):
    # `Grid` accepts two cells a side: a generator either draws on it or
    # refuses it with a ValueError that names the sizes, not a numpy error
    # or a RuntimeError from a loop of tries.
    try:
        drawn = make()
    except ValueError as error:
        text = str(error)
        assert "image_size" in text or "patch" in text or "cells" in text, text
        return
    if isinstance(drawn, datasets.Task):
        assert (drawn.image_size, drawn.patch_size) == (32, 16)
