"""Tests of keras_pam.datasets (only this subpackage is imported)."""

import collections
import dataclasses
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from keras_pam import data as data_lib
from keras_pam import datasets
from keras_pam.datasets import generated
from keras_pam.datasets import generated_coin
from keras_pam.datasets import generated_pretraining
from keras_pam.datasets.grid_world import Grid

NUM_TRAIN = 300
NUM_TEST = 100
# The tiny test model's grid: 32x32 images in 8-pixel patches.
SMALL = {"image_size": 32, "patch_size": 8}


@pytest.fixture(scope="module")
def tasks():
    return {
        name: datasets.make_task(name, NUM_TRAIN, NUM_TEST, seed=0)
        for name in datasets.TASK_NAMES
    }


def _keys(split):
    return {
        (image.tobytes(), prompt)
        for image, prompt in zip(split["images"], split["prompts"], strict=True)
    }


def test_task_names_and_orders():
    assert len(datasets.TASK_NAMES) >= 7
    for name in (
        "color",
        "shape",
        "count",
        "position",
        "digits",
        "choice",
        "sklearn_digits",
    ):
        assert name in datasets.TASK_NAMES
    assert set(datasets.ORDERS) == {"order1", "order2", "order3"}
    for order, names in datasets.ORDERS.items():
        coin = datasets.COIN_ORDERS[order]
        assert len(names) == len(coin) == len(set(names)) == 6
        for coin_name, name in zip(coin, names, strict=True):
            assert datasets.COIN_ANALOGUES[coin_name] == name
    assert datasets.ORDERS["order1"][0] == "choice"  # ScienceQA first.


@pytest.mark.parametrize("name", generated.TASK_NAMES)
def test_task_format(tasks, name):
    task = tasks[name]
    assert isinstance(task, datasets.Task)
    assert task.name == name
    assert task.metric in ("vqa", "exact")
    assert task.description
    # Drawn at the default grid: 64x64 images, 16-pixel patches.
    assert (task.image_size, task.patch_size) == (64, 16)
    for split, n in ((task.train, NUM_TRAIN), (task.test, NUM_TEST)):
        assert datasets.validate_split(split) == n
        assert split["images"].shape == (n, 64, 64, 3)
        assert split["images"].dtype == np.uint8
        assert split["prompts"].dtype == object
        assert split["responses"].dtype == object
        assert all(p.endswith("\n") for p in split["prompts"])
        assert all(p.count("\n") == 1 for p in split["prompts"])
        vocabulary = set(datasets.answer_vocabulary(name))
        assert set(split["responses"]) <= vocabulary
        if task.metric == "vqa":
            assert split["answers"].shape == (n,)
            for answers, response in zip(
                split["answers"], split["responses"], strict=True
            ):
                assert answers == [response] * generated.NUM_ANNOTATORS
        else:
            assert "answers" not in split
        # Images are not blank.
        assert split["images"].std(axis=(1, 2, 3)).min() > 0


@pytest.mark.parametrize("name", generated.TASK_NAMES)
def test_labels_not_degenerate(tasks, name):
    responses = tasks[name].train["responses"]
    counts = collections.Counter(responses)
    assert len(counts) >= 2
    assert counts.most_common(1)[0][1] / len(responses) < 0.6
    # Every answer of the vocabulary shows up.
    assert set(counts) == set(datasets.answer_vocabulary(name))


@pytest.mark.parametrize("name", generated.TASK_NAMES)
def test_train_test_disjoint(tasks, name):
    task = tasks[name]
    assert not _keys(task.train) & _keys(task.test)


@pytest.mark.parametrize("name", generated.TASK_NAMES)
def test_determinism(tasks, name):
    again = datasets.make_task(name, NUM_TRAIN, NUM_TEST, seed=0)
    other = datasets.make_task(name, NUM_TRAIN, NUM_TEST, seed=1)
    for key in ("images", "prompts", "responses"):
        np.testing.assert_array_equal(again.train[key], tasks[name].train[key])
        np.testing.assert_array_equal(again.test[key], tasks[name].test[key])
    assert not np.array_equal(other.train["images"], again.train["images"])


def test_image_size_and_empty_splits():
    task = datasets.make_task("position", 5, 0, seed=2, **SMALL)
    assert task.train["images"].shape == (5, 32, 32, 3)
    assert task.test["images"].shape == (0, 32, 32, 3)
    assert task.num_train == 5 and task.num_test == 0
    assert (task.image_size, task.patch_size) == (32, 8)
    task = datasets.make_task("sklearn_digits", 3, 2, image_size=48)
    assert task.train["images"].shape == (3, 48, 48, 3)
    assert (task.image_size, task.patch_size) == (48, 16)
    task = datasets.make_task("count", 2, 1, image_size=96, patch_size=24)
    assert task.test["images"].shape == (1, 96, 96, 3)
    assert (task.image_size, task.patch_size) == (96, 24)
    task = datasets.make_task("color", 2, 1)
    assert task.train["images"].shape == (2, 64, 64, 3)
    assert (task.image_size, task.patch_size) == (64, 16)
    # Loaded data records no grid.
    loaded = datasets.Task("x", task.train, task.test, metric="exact")
    assert loaded.image_size is None and loaded.patch_size is None


@pytest.fixture
def sklearn_calls(monkeypatch):
    """The scikit-learn image indices drawn, in order, as `(index, image)`
    pairs: a spy on `_sklearn_image`, in the modules that call it (the
    task's generator and the pretraining mixture)."""
    calls = []
    draw = generated_coin._sklearn_image

    def spy(rng, grid, index):
        image = draw(rng, grid, index)
        calls.append((int(index), image))
        return image

    monkeypatch.setattr(generated_coin, "_sklearn_image", spy)
    monkeypatch.setattr(generated_pretraining, "_sklearn_image", spy)
    return calls


def test_sklearn_digits_large_split_repeats_only_after_pool(sklearn_calls):
    # 1797 images: a test pool of 359, so 400 test examples repeat some.
    # Each is pasted on its own background at its own place, so the
    # images differ; the scikit-learn images drawn repeat.
    task = datasets.make_task("sklearn_digits", 10, 400)
    test_pool, train_pool = generated._sklearn_pools()
    assert len(test_pool) == generated.SKLEARN_TEST_POOL_SIZE == 1797 // 5
    assert not set(test_pool) & set(train_pool)
    assert len(sklearn_calls) == 410
    test_indices = [i for i, _ in sklearn_calls[:400]]
    train_indices = [i for i, _ in sklearn_calls[400:]]
    # The test split is drawn first, from the test pool only, every pool
    # image once before any repeats.
    assert set(test_indices) == set(test_pool)
    assert len(set(test_indices[: len(test_pool)])) == len(test_pool)
    assert set(train_indices) <= set(train_pool)
    for (_, image), drawn in zip(
        sklearn_calls, [*task.test["images"], *task.train["images"]]
    ):
        np.testing.assert_array_equal(image, drawn)
    _, targets = generated._sklearn_digits()
    assert list(task.test["responses"]) == [
        generated.NUMBER_WORDS[targets[i]] for i in test_indices
    ]
    assert not _keys(task.train) & _keys(task.test)


@pytest.mark.parametrize("grid", [{}, SMALL], ids=["64-16", "32-8"])
def test_sklearn_digit_is_pasted_whole_into_one_cell(sklearn_calls, grid):
    # The 8x8 digit, scaled to `patch - 2` pixels a side (at least 8),
    # brightens a plain background inside one cell.
    task = datasets.make_task("sklearn_digits", 0, 12, seed=3, **grid)
    patch, size = task.patch_size, task.image_size
    side = max(8, patch - 2)
    images, _ = generated._sklearn_digits()
    assert len(sklearn_calls) == 12
    for (index, _), image in zip(sklearn_calls, task.test["images"]):
        digit = Image.fromarray(images[index]).resize(
            (side, side), Image.BILINEAR
        )
        digit = np.asarray(digit)[..., None]
        colors, counts = np.unique(
            image.reshape(-1, 3), axis=0, return_counts=True
        )
        background = colors[np.argmax(counts)]
        expected = np.maximum(background, digit)
        windows = np.lib.stride_tricks.sliding_window_view(
            image, (side, side, 3)
        )[..., 0, :, :, :]
        tops, lefts = np.nonzero((windows == expected).all((-3, -2, -1)))
        placed = [
            (top, left)
            for top, left in zip(tops, lefts)
            if top // patch == (top + side - 1) // patch
            and left // patch == (left + side - 1) // patch
        ]
        assert placed, index
        top, left = placed[0]
        outside = np.ones((size, size), bool)
        outside[top : top + side, left : left + side] = False
        assert (image[outside] == background).all()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="Known tasks"):
        datasets.make_task("nope")
    with pytest.raises(ValueError, match="image_size"):
        datasets.make_task("color", image_size=8)
    with pytest.raises(ValueError, match="multiple of patch_size 16"):
        datasets.make_task("color", image_size=40)
    with pytest.raises(ValueError, match="at least 3 patches a side"):
        datasets.make_task("color", image_size=32, patch_size=32)
    with pytest.raises(ValueError, match="patch_size must be >= 8"):
        datasets.make_task("color", image_size=32, patch_size=4)
    with pytest.raises(ValueError, match="multiple of patch_size 8"):
        datasets.make_suite("order1", image_size=36, patch_size=8)
    with pytest.raises(ValueError, match="num_train"):
        datasets.make_task("color", num_train=-1)
    with pytest.raises(ValueError, match="seed"):
        datasets.make_task("color", seed=-3)
    with pytest.raises(ValueError, match="Known orders"):
        datasets.make_suite("order9")
    with pytest.raises(ValueError, match="metric"):
        datasets.Task("x", {}, {}, metric="bleu")


def test_digit_glyphs_are_distinct():
    glyphs = generated.GLYPHS.reshape(10, -1)
    assert glyphs.shape == (10, 35)
    assert len({g.tobytes() for g in glyphs}) == 10


def _trimmed(mask):
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


@pytest.mark.parametrize(
    "grid, scale", [({}, 2), (SMALL, 1)], ids=["64-16", "32-8"]
)
def test_digits_answer_is_the_drawn_glyph(grid, scale):
    # The ink is the answer's glyph, as large as a cell allows (2 pixels a
    # stroke in a 16-pixel cell), in one colour, whole inside one cell.
    task = datasets.make_task("digits", 60, 0, seed=1, **grid)
    patch = task.patch_size
    for image, answer in zip(
        task.train["images"], task.train["responses"], strict=True
    ):
        colors, counts = np.unique(
            image.reshape(-1, 3), axis=0, return_counts=True
        )
        assert len(colors) == 2  # A plain background and the ink.
        ink = (image == colors[np.argmin(counts)]).all(-1)
        glyph = generated.GLYPHS[generated.NUMBER_WORDS.index(answer)]
        drawn = np.kron(glyph, np.ones((scale, scale), bool))
        np.testing.assert_array_equal(_trimmed(ink), _trimmed(drawn))
        ys, xs = np.nonzero(ink)
        assert ys.min() // patch == ys.max() // patch
        assert xs.min() // patch == xs.max() // patch


def test_position_prompts_and_answers():
    # Two shapes of different colours in opposite halves; the prompt names
    # one by its colour and the axis, the answer is its half (the answers
    # checked against the pixels are in tests/test_grid_world.py).
    assert generated.SIDES == ("left", "right", "top", "bottom")
    assert datasets.answer_vocabulary("position") == generated.SIDES
    assert not hasattr(generated, "RELATIONS")
    assert generated._position_prompt("red", True) == (
        "answer en is the red shape on the left or the right\n"
    )
    assert generated._position_prompt("blue", False) == (
        "answer en is the blue shape at the top or the bottom\n"
    )
    task = datasets.make_task("position", 200, 50, seed=4)
    pairs = collections.Counter()
    for split in (task.train, task.test):
        for image, prompt, answer in zip(
            split["images"], split["prompts"], split["responses"], strict=True
        ):
            (color,) = [w for w in prompt.split() if w in generated.COLORS]
            horizontal = answer in ("left", "right")
            assert prompt == generated._position_prompt(color, horizontal)
            pictured = [
                c
                for c, rgb in generated.COLORS.items()
                if (image == np.array(rgb, np.uint8)).all(-1).any()
            ]
            assert color in pictured and len(pictured) == 2
            pairs[color, answer] += 1
    # Every colour is asked about on every side.
    assert len(pairs) == len(generated.COLORS) * len(generated.SIDES)


def _choice_sizes(task):
    """Per colour-named choice example: `(question, answer, {letter:
    (extent, area)})`, the box side and the pixel count of each option's
    shape, from the drawn image."""
    for image, prompt, answer in zip(
        task.train["images"],
        task.train["prompts"],
        task.train["responses"],
        strict=True,
    ):
        question, options = prompt[len("answer en ") : -1].split("? ")
        parts = options.split(" ")
        names = {
            k.rstrip(":"): v
            for k, v in zip(parts[0::2], parts[1::2], strict=True)
        }
        assert len(names) in (2, 3)
        if not set(names.values()) <= set(generated.COLOR_NAMES):
            assert set(names.values()) <= set(generated.SHAPES)
            continue
        sizes = {}
        for letter, color in names.items():
            rgb = np.array(generated.COLORS[color], np.uint8)
            mask = (image == rgb).all(-1)
            ys, xs = np.nonzero(mask)
            extent = xs.max() - xs.min() + 1
            assert extent == ys.max() - ys.min() + 1
            sizes[letter] = (int(extent), int(mask.sum()))
        yield question, answer, sizes


def _is_strict_extreme(values, answer, biggest):
    others = [v for k, v in values.items() if k != answer]
    if biggest:
        return all(values[answer] > v for v in others)
    return all(values[answer] < v for v in others)


@pytest.mark.parametrize("grid", [{}, SMALL], ids=["64-16", "32-8"])
def test_choice_answer_is_the_extreme_size(grid):
    # Recompute, from the drawn image, which named option is the biggest
    # or smallest (the side of its box): the answer letter must name it,
    # and no other option may be as big (or as small).
    task = datasets.make_task("choice", 150, 0, seed=5, **grid)
    checked = collections.Counter()
    for question, answer, sizes in _choice_sizes(task):
        extents = {k: extent for k, (extent, _) in sizes.items()}
        biggest = "bigg" in question
        assert _is_strict_extreme(extents, answer, biggest), (
            question,
            answer,
            sizes,
        )
        checked[len(sizes)] += 1
    # Two options on every grid (`CHOICE_OPTIONS`).
    assert checked[2] >= 30 and set(checked) == {2}


@pytest.mark.parametrize("grid", [{}, SMALL], ids=["64-16", "32-8"])
def test_choice_answer_is_the_extreme_area(grid):
    # The answer is also the option of the most (or fewest) pixels, for
    # any two shapes: "bigger" is clear whatever the shapes.
    task = datasets.make_task("choice", 150, 0, seed=5, **grid)
    checked = 0
    for question, answer, sizes in _choice_sizes(task):
        areas = {k: area for k, (_, area) in sizes.items()}
        biggest = "bigg" in question
        assert _is_strict_extreme(areas, answer, biggest), (
            question,
            answer,
            sizes,
        )
        checked += 1
    assert checked >= 30


@pytest.mark.parametrize("order", ["order1", "order2", "order3"])
def test_make_suite(order):
    suite = datasets.make_suite(order, num_train=8, num_test=4, seed=0)
    assert [task.name for task in suite] == list(datasets.ORDERS[order])
    for task in suite:
        assert task.num_train == 8 and task.num_test == 4
        assert (task.image_size, task.patch_size) == (64, 16)
        assert task.train["images"].shape == (8, 64, 64, 3)
    small = datasets.make_suite(order, num_train=2, num_test=1, **SMALL)
    for task in small:
        assert (task.image_size, task.patch_size) == (32, 8)
        assert task.test["images"].shape == (1, 32, 32, 3)


def test_make_suite_explicit_tasks():
    suite = datasets.make_suite(tasks=["count", "color"], num_train=4)
    assert [task.name for task in suite] == ["count", "color"]
    with pytest.raises(TypeError):
        datasets.make_suite(tasks="count")


def test_pretraining_mixture_and_vocabulary():
    data = datasets.pretraining_mixture(1000, seed=0)
    assert datasets.validate_split(data) == 1000
    again = datasets.pretraining_mixture(1000, seed=0)
    np.testing.assert_array_equal(data["images"], again["images"])
    np.testing.assert_array_equal(data["responses"], again["responses"])
    prompts = list(data["prompts"])
    responses = list(data["responses"])
    captions = [r for p, r in zip(prompts, responses) if p == "caption en\n"]
    # Captions name colours, shapes, sizes, counts, positions and digits.
    assert any(c.startswith("digit ") for c in captions)
    assert any(c.startswith("handwritten ") for c in captions)
    assert any(c.endswith(" shapes") for c in captions)
    # "a red circle on the left and a blue square on the right": the two
    # objects of a relation, each in its half.
    placed = re.compile(
        r"an? (\w+) (\w+) (on the (left|right)|at the (top|bottom))"
    )
    relations = [c.split(" and ") for c in captions if " and " in c]
    assert relations
    for phrases in relations:
        matches = [placed.fullmatch(p) for p in phrases]
        assert len(matches) == 2 and all(matches), phrases
        sides = {m[4] or m[5] for m in matches}
        assert sides in ({"left", "right"}, {"top", "bottom"}), phrases
        assert matches[0][1] != matches[1][1]  # Two different colours.
        assert {m[2] for m in matches} <= set(generated.SHAPES)
    assert {"left", "top"} <= {
        side for c in captions for side in generated.SIDES if f" {side}" in c
    }
    assert any(" big " in c or " small " in c for c in captions)
    assert any(c.split()[-1] in generated.SHAPES for c in captions)
    assert any(" is bigger than the " in c for c in captions)
    counts = collections.Counter(captions)
    assert counts.most_common(1)[0][1] / len(captions) < 0.2
    # Generic questions, several phrasings of each, none a task's own.
    questions = set(prompts) - {"caption en\n"}
    for kind, phrasings in generated.PRETRAINING_QUESTIONS.items():
        assert len(phrasings) >= 1
        assert {f"answer en {q}\n" for q in phrasings} <= questions, kind
    # Where a named object lies, in other words than `position`'s, and
    # answered with its words (of one object alone, or of two in opposite
    # halves); the other way round, which colour lies in a named half;
    # which of 2-3 named shapes is the larger (smaller, largest, smallest);
    # and multiple choice in generic words, answered with a letter.
    sides = {
        "left half or the right half": {"left", "right"},
        "top half or the bottom half": {"top", "bottom"},
    }
    color_at_side = re.compile(
        r"answer en what colour is the object in the "
        r"(left|right|top|bottom) half\n"
    )
    larger = re.compile(
        r"answer en which is (larger|smaller) the (\w+) shape or the (\w+) "
        r"shape\n"
        r"|answer en which is the (largest|smallest) the (\w+) shape the "
        r"(\w+) shape or the (\w+) shape\n"
    )
    options = re.compile(
        r"answer en choose the (colour of the object|shape of the object"
        r"|larger one|smaller one|largest one|smallest one) "
        r"a: (\w+) b: (\w+)(?: c: (\w+))?\n"
    )
    asked = collections.Counter()
    for prompt, response in zip(prompts, responses, strict=True):
        for phrase, answers in sides.items():
            if prompt.endswith(f"object in the {phrase}\n"):
                assert response in answers, (prompt, response)
                asked[phrase] += 1
        if color_at_side.fullmatch(prompt):
            assert response in generated.COLOR_NAMES, (prompt, response)
            asked["color at side"] += 1
        if match := larger.fullmatch(prompt):
            word, *named = (g for g in match.groups() if g)
            assert len(set(named)) == len(named), prompt
            assert set(named) <= set(generated.COLOR_NAMES), prompt
            assert response in named, (prompt, response)
            asked[word] += 1
        if match := options.fullmatch(prompt):
            question, *named = (g for g in match.groups() if g)
            assert len(set(named)) == len(named), prompt
            # Colours or shapes; the sized ones are named either way.
            if question.startswith("colour"):
                assert set(named) <= set(generated.COLOR_NAMES), prompt
            elif question.startswith("shape"):
                assert set(named) <= set(generated.SHAPES), prompt
            else:
                assert set(named) <= set(generated.SHAPES) or set(named) <= set(
                    generated.COLOR_NAMES
                ), prompt
            assert response in generated.OPTION_LETTERS[: len(named)]
            asked[question, len(named)] += 1
    choose = {"colour of the object", "shape of the object"}
    assert set(asked) == set(sides) | {
        "color at side",
        "larger",
        "smaller",
        "largest",
        "smallest",
        *((q, n) for q in choose for n in (2, 3)),
        ("larger one", 2),
        ("smaller one", 2),
        ("largest one", 3),
        ("smallest one", 3),
    }, dict(asked)
    # Captions and questions alike (about a fifth captions: multiple
    # choices are never captioned); the answers of a multiple choice
    # spread over its letters.
    assert 0.1 < len(captions) / len(prompts) < 0.35
    letters = collections.Counter(
        r
        for p, r in zip(prompts, responses, strict=True)
        if options.fullmatch(p)
    )
    assert set(letters) == set(generated.OPTION_LETTERS), letters
    task_prompts = set()
    for name in datasets.ALL_TASK_NAMES:
        task_prompts |= set(datasets.make_task(name, 30, 0).train["prompts"])
    assert not questions & task_prompts

    texts = datasets.vocabulary_texts()
    assert len(texts) == len(set(texts))
    words = {w for t in texts for w in t.split()}
    assert {w for t in prompts + responses for w in t.split()} <= words
    # Every word of every task, the extended ones included, at any grid.
    for name in datasets.ALL_TASK_NAMES:
        for grid in ({}, SMALL):
            task = datasets.make_task(name, 50, 10, seed=3, **grid)
            for split in (task.train, task.test):
                for key in ("prompts", "responses"):
                    assert {w for t in split[key] for w in t.split()} <= words
    for perception in generated.PERCEPTIONS:
        probe = generated.perception_probe(perception, 20, seed=1)
        for key in ("prompts", "responses"):
            assert {w for t in probe[key] for w in t.split()} <= words
    # A small, consistent vocabulary (the extended tasks' words included).
    assert len(words) < 110


def test_pretraining_never_sees_a_sklearn_test_image(sklearn_calls):
    # Every scikit-learn image is pasted at a new place on a new
    # background, so the images drawn are compared, not the pixels.
    data = datasets.pretraining_mixture(1500, seed=0)
    handwritten = sum(
        r.startswith("handwritten ") or p.endswith(("shown\n", "digit\n"))
        for p, r in zip(data["prompts"], data["responses"], strict=True)
    )
    seen = {index for index, _ in sklearn_calls}
    assert 0 < len(sklearn_calls) <= handwritten
    assert len(seen) > 50
    del sklearn_calls[:]
    for seed in (0, 1, 7):
        datasets.make_task("sklearn_digits", 0, 300, seed=seed)
    tested = {index for index, _ in sklearn_calls}
    assert len(tested) > 250 and not tested & seen
    # The probes of the base's perception read the test pool's images:
    # images pretraining never saw.
    del sklearn_calls[:]
    perceptions = ["digit"]
    if hasattr(generated, "TASK_PERCEPTIONS"):  # The handwritten probe.
        perceptions.append(generated.TASK_PERCEPTIONS["sklearn_digits"])
    for perception in perceptions:
        generated.perception_probe(perception, 40, seed=2)
    probed = {index for index, _ in sklearn_calls}
    assert probed and not probed & seen
    assert probed <= set(generated._sklearn_pools()[0])


# LLaVA / CoIN JSON ----------------------------------------------------------


def _write_llava(root, records, images=("a.png", "b.jpg")):
    for i, name in enumerate(images):
        color = (200, 10 * i, 30)
        Image.new("RGB", (40 + i, 30), color).save(os.path.join(root, name))
    path = os.path.join(root, "data.json")
    with open(path, "w") as f:
        json.dump(records, f)
    return path


def _record(image, question, answer):
    return {
        "id": image,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def test_load_llava_json(tmp_path):
    records = [
        _record("a.png", "What color is it?\nAnswer in one word.", "Red"),
        _record("b.jpg", "Is it big?", " yes "),
    ]
    records[1]["conversations"] += [
        {"from": "human", "value": "And red?"},
        {"from": "gpt", "value": "No"},
    ]
    path = _write_llava(tmp_path, records)
    split = datasets.load_llava_json(path, tmp_path, image_size=24)
    assert datasets.validate_split(split) == 3
    assert split["images"].shape == (3, 24, 24, 3)
    assert list(split["prompts"]) == [
        "answer en What color is it? Answer in one word.\n",
        "answer en Is it big?\n",
        "answer en And red?\n",
    ]
    assert list(split["responses"]) == ["red", "yes", "no"]
    np.testing.assert_array_equal(split["images"][0, 5, 5], [200, 0, 30])
    limited = datasets.load_llava_json(
        path, tmp_path, image_size=16, prompt_prefix="", max_examples=2
    )
    assert list(limited["prompts"]) == [
        "What color is it? Answer in one word.\n",
        "Is it big?\n",
    ]


def test_load_llava_json_errors(tmp_path):
    good = _record("a.png", "Q?", "a")
    with pytest.raises(ValueError, match="JSON file not found"):
        datasets.load_llava_json(tmp_path / "missing.json", tmp_path)
    path = _write_llava(tmp_path, [{"conversations": good["conversations"]}])
    with pytest.raises(ValueError, match="Record 0 has no 'image'"):
        datasets.load_llava_json(path, tmp_path)
    path = _write_llava(tmp_path, [good, {"image": "a.png"}])
    with pytest.raises(ValueError, match="Record 1 has no 'conversations'"):
        datasets.load_llava_json(path, tmp_path)
    only_human = dict(good, conversations=good["conversations"][:1])
    path = _write_llava(tmp_path, [only_human])
    with pytest.raises(ValueError, match="no human turn followed by"):
        datasets.load_llava_json(path, tmp_path)
    path = _write_llava(tmp_path, [_record("gone.png", "Q?", "a")])
    missing = os.path.join(tmp_path, "gone.png")
    with pytest.raises(ValueError, match=f"image file not found: {missing}"):
        datasets.load_llava_json(path, tmp_path)
    path = _write_llava(tmp_path, [])
    with pytest.raises(ValueError, match="non-empty JSON list"):
        datasets.load_llava_json(path, tmp_path)
    path = _write_llava(tmp_path, [good])
    with pytest.raises(ValueError, match="No examples"):
        datasets.load_llava_json(path, tmp_path, max_examples=0)
    path = _write_llava(tmp_path, {"not": "a list"})
    with pytest.raises(ValueError, match="JSON list of records"):
        datasets.load_llava_json(path, tmp_path)
    with open(path, "w") as f:
        f.write("{broken")
    with pytest.raises(ValueError, match="Invalid JSON"):
        datasets.load_llava_json(path, tmp_path)


def test_write_llava_json_round_trip(tmp_path):
    task = datasets.make_task("choice", num_train=5, num_test=1, **SMALL)
    path = datasets.write_llava_json(
        task.train, tmp_path / "a" / "train.json", tmp_path, image_folder="img"
    )
    assert path == os.fspath(tmp_path / "a" / "train.json")
    assert sorted(os.listdir(tmp_path / "img")) == [
        f"{i}.png" for i in range(5)
    ]
    split = datasets.load_llava_json(path, tmp_path, image_size=32)
    for key in ("images", "prompts", "responses"):
        np.testing.assert_array_equal(split[key], task.train[key])
    with pytest.raises(ValueError, match="missing the key"):
        datasets.write_llava_json({}, tmp_path / "x.json", tmp_path)


def _coin_eval_record(image, question_id, question, answer):
    """A record of CoIN's evaluation files (no conversations)."""
    return {
        "question_id": question_id,
        "image": image,
        "text": f"{question}\nAnswer the question using a single word.",
        "answer": answer,
    }


def _write_json(path, content):
    with open(path, "w") as f:
        json.dump(content, f)
    return path


def test_load_llava_json_reads_the_annotators_answers(tmp_path):
    # Answers in the records: a list of str, or VQAv2/VizWiz dicts.
    first = dict(
        _record("a.png", "What color?", "Red"),
        answers=[" Red", "red", "ORANGE"],
    )
    second = dict(
        _record("b.jpg", "Is it big?", "yes"),
        answers=[
            {"answer": "Yes", "answer_confidence": "yes"},
            {"answer": "no"},
        ],
    )
    path = _write_llava(tmp_path, [first, second])
    split = datasets.load_llava_json(path, tmp_path, image_size=16)
    assert datasets.validate_split(split) == 2
    assert list(split["responses"]) == ["red", "yes"]
    assert list(split["answers"]) == [["red", "red", "orange"], ["yes", "no"]]

    # CoIN's evaluation records joined on question_id with TextVQA's file.
    records = [
        _coin_eval_record("a.png", 11, "What does it say?", "Stop"),
        _coin_eval_record("b.jpg", "12", "Which brand?", "acme"),
    ]
    path = _write_llava(tmp_path, records)
    textvqa = _write_json(
        tmp_path / "textvqa.json",
        {
            "dataset_name": "textvqa",
            "data": [
                {"question_id": 12, "answers": ["ACME", "acme co"]},
                {"question_id": 11, "answers": ["stop", "Stop ", "halt"]},
            ],
        },
    )
    split = datasets.load_llava_json(
        path, tmp_path, image_size=16, annotations_path=textvqa
    )
    assert list(split["prompts"]) == [
        "answer en What does it say? Answer the question using a single "
        "word.\n",
        "answer en Which brand? Answer the question using a single word.\n",
    ]
    assert list(split["responses"]) == ["stop", "acme"]
    assert list(split["answers"]) == [
        ["stop", "stop", "halt"],
        ["acme", "acme co"],
    ]

    # VQAv2's annotation file: entries under "annotations", dict answers.
    vqav2 = _write_json(
        tmp_path / "vqav2.json",
        {
            "annotations": [
                {
                    "question_id": qid,
                    "multiple_choice_answer": "x",
                    "answers": [
                        {"answer": a, "answer_id": i + 1}
                        for i, a in enumerate(answers)
                    ],
                }
                for qid, answers in ((11, ["two", "2"]), (12, ["no"] * 3))
            ]
        },
    )
    split = datasets.load_llava_json(
        path, tmp_path, image_size=16, annotations_path=vqav2
    )
    assert list(split["answers"]) == [["two", "2"], ["no", "no", "no"]]

    # Without answers anywhere, the split has no "answers" key.
    split = datasets.load_llava_json(path, tmp_path, image_size=16)
    assert "answers" not in split
    assert list(split["responses"]) == ["stop", "acme"]


def test_load_llava_json_answer_errors(tmp_path):
    with_answers = dict(_record("a.png", "Q?", "a"), answers=["a", "b"])
    without = _record("b.jpg", "Q?", "b")
    path = _write_llava(tmp_path, [with_answers, without])
    with pytest.raises(ValueError, match="Record 1: the annotators' answers"):
        datasets.load_llava_json(path, tmp_path)
    path = _write_llava(tmp_path, [dict(with_answers, answers=[])])
    with pytest.raises(ValueError, match="Record 0: 'answers' is empty"):
        datasets.load_llava_json(path, tmp_path)
    path = _write_llava(tmp_path, [dict(with_answers, answers="a")])
    with pytest.raises(ValueError, match="must be a list of str"):
        datasets.load_llava_json(path, tmp_path)
    two_questions = dict(with_answers)
    two_questions["conversations"] = with_answers["conversations"] * 2
    path = _write_llava(tmp_path, [two_questions])
    with pytest.raises(ValueError, match="Record 0 has 2 questions"):
        datasets.load_llava_json(path, tmp_path)
    records = [_coin_eval_record("a.png", 5, "Q?", "a")]
    path = _write_llava(tmp_path, records)
    other = _write_json(
        tmp_path / "ann.json", {"data": [{"question_id": 6, "answers": ["a"]}]}
    )
    with pytest.raises(ValueError, match="no annotation with its question_id"):
        datasets.load_llava_json(path, tmp_path, annotations_path=other)
    with pytest.raises(ValueError, match="Annotation file not found"):
        datasets.load_llava_json(
            path, tmp_path, annotations_path=tmp_path / "missing.json"
        )
    bad = _write_json(tmp_path / "bad.json", {"questions": []})
    with pytest.raises(ValueError, match="'annotations' \\(VQAv2\\)"):
        datasets.load_llava_json(path, tmp_path, annotations_path=bad)
    no_answer = [{"question_id": 1, "image": "a.png", "text": "Q?"}]
    path = _write_llava(tmp_path, no_answer)
    with pytest.raises(ValueError, match="no 'answer' or 'answers'"):
        datasets.load_llava_json(path, tmp_path)


def test_vqa_task_without_answers_is_refused(tmp_path):
    path = _write_llava(tmp_path, [_record("a.png", "What color?", "red")])
    test = datasets.load_llava_json(path, tmp_path, image_size=16)
    with pytest.raises(ValueError, match="Task 'TextVQA': metric 'vqa'"):
        datasets.Task("TextVQA", train=test, test=test, metric="vqa")
    # Exact match needs no answers; with answers, "vqa" is accepted.
    assert datasets.Task("GQA", train=test, test=test, metric="exact")
    scored = dict(test, answers=datasets.object_array([["red", "red"]]))
    task = datasets.Task("TextVQA", train=test, test=scored, metric="vqa")
    assert task.num_test == 1


def test_write_llava_json_round_trip_keeps_answers(tmp_path):
    task = datasets.make_task("color", num_train=1, num_test=3, **SMALL)
    assert task.metric == "vqa"
    split = dict(task.test)
    split["answers"] = datasets.object_array(
        [["Red", "red", "blue"], ["green"], ["a", "b", "c", "d"]]
    )
    path = datasets.write_llava_json(split, tmp_path / "test.json", tmp_path)
    with open(path) as f:
        records = json.load(f)
    assert records[1]["answers"] == ["green"]
    loaded = datasets.load_llava_json(path, tmp_path, image_size=32)
    assert list(loaded["answers"]) == [
        ["red", "red", "blue"],
        ["green"],
        ["a", "b", "c", "d"],
    ]
    np.testing.assert_array_equal(loaded["responses"], task.test["responses"])
    rebuilt = datasets.Task("color", task.train, loaded, metric="vqa")
    assert rebuilt.num_test == 3


# TFDS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def toy_builder(tfds):
    """A small VQA-like tfds builder whose data is generated in memory."""

    class ToyVqaForKerasPam(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "question": tfds.features.Text(),
                    "answers": tfds.features.Sequence(tfds.features.Text()),
                    "answer": tfds.features.Text(),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(3):
                yield (
                    i,
                    {
                        "image": np.full((10, 12, 3), 50 * i, np.uint8),
                        "question": f"What is\n{i}?",
                        "answers": ["Cat", "dog", "dog", "cat", "cat"],
                        "answer": "Yes",
                    },
                )

    return ToyVqaForKerasPam


def test_load_tfds_mock_data_random_examples(tfds, toy_builder):
    # MockPolicy.USE_CODE: tfds makes random examples from the features.
    policy = tfds.testing.MockPolicy.USE_CODE
    with tfds.testing.mock_data(num_examples=4, policy=policy):
        split = datasets.load_tfds(
            "toy_vqa_for_keras_pam",
            "train",
            image_key="image",
            question_key="question",
            answer_key="answers",
            image_size=16,
        )
    assert datasets.validate_split(split) == 4
    assert split["images"].shape == (4, 16, 16, 3)
    for response, answers in zip(
        split["responses"], split["answers"], strict=True
    ):
        assert response in answers
    with tfds.testing.mock_data(num_examples=2, policy=policy):
        split = datasets.load_tfds(
            "toy_vqa_for_keras_pam", "train", "image", "question", "answer"
        )
    assert "answers" not in split
    assert split["images"].shape == (2, 224, 224, 3)


def test_load_tfds_mock_data_fixed_examples(tfds):
    tf = pytest.importorskip("tensorflow")

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del self, split, decoders, read_config, kwargs
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": np.stack(
                    [np.full((8, 6, 1), v, np.uint8) for v in (0, 90, 180)]
                ),
                "qa": {
                    "question": ["What  is\nit?", "Which one?", "Why?"],
                    "answers": [
                        ["Cat", "dog", "dog"],
                        ["a", "b", "b"],
                        ["x", "y", "x"],
                    ],
                },
            }
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        split = datasets.load_tfds(
            "mnist",
            "test",
            image_key="image",
            question_key="qa/question",
            answer_key="qa/answers",
            image_size=4,
            prompt_prefix="answer en ",
            max_examples=2,
        )
        with pytest.raises(ValueError, match="'nope' not found"):
            datasets.load_tfds("mnist", "test", "image", "nope", "qa/answers")
    assert list(split["prompts"]) == [
        "answer en What is it?\n",
        "answer en Which one?\n",
    ]
    assert list(split["responses"]) == ["dog", "b"]
    assert list(split["answers"]) == [["cat", "dog", "dog"], ["a", "b", "b"]]
    np.testing.assert_array_equal(split["images"][1], np.full((4, 4, 3), 90))


def _clevr_dataset(channels):
    """A `tfds.testing.mock_data` `as_dataset_fn` in CLEVR's layout:
    `question_answer` is a sequence of question/answer per image."""
    import tensorflow as tf

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del self, split, decoders, read_config, kwargs
        return tf.data.Dataset.from_generator(
            lambda: iter(
                [
                    {
                        "image": np.full((6, 8, channels), v, np.uint8),
                        "question_answer": {
                            "question": questions,
                            "answer": answers,
                        },
                    }
                    for v, questions, answers in (
                        (10, ["How many\ncubes?", "Is it red?"], ["2", "Yes"]),
                        (20, ["What shape?"], ["Sphere"]),
                    )
                ]
            ),
            output_signature={
                "image": tf.TensorSpec((6, 8, channels), tf.uint8),
                "question_answer": {
                    "question": tf.TensorSpec((None,), tf.string),
                    "answer": tf.TensorSpec((None,), tf.string),
                },
            },
        )

    return as_dataset


def test_load_tfds_several_questions_per_image(tfds):
    pytest.importorskip("tensorflow")
    with tfds.testing.mock_data(as_dataset_fn=_clevr_dataset(3)):
        split = datasets.load_tfds(
            "clevr",
            "validation",
            image_key="image",
            question_key="question_answer/question",
            answer_key="question_answer/answer",
            image_size=4,
        )
        with pytest.raises(ValueError, match="must hold as many answers"):
            datasets.load_tfds(
                "clevr",
                "validation",
                "image",
                "question_answer/question",
                "image",
            )
    assert datasets.validate_split(split) == 3
    assert "answers" not in split
    assert list(split["prompts"]) == [
        "answer en How many cubes?\n",
        "answer en Is it red?\n",
        "answer en What shape?\n",
    ]
    assert list(split["responses"]) == ["2", "yes", "sphere"]
    assert list(split["images"][:, 0, 0, 0]) == [10, 10, 20]


def test_load_tfds_prepared_builder(tfds, toy_builder, tmp_path):
    builder = toy_builder(data_dir=os.fspath(tmp_path))
    with pytest.raises(ValueError, match="could not be read"):
        datasets.load_tfds(
            "toy_vqa_for_keras_pam",
            "train",
            "image",
            "question",
            "answers",
            data_dir=os.fspath(tmp_path),
        )
    builder.download_and_prepare()  # Local, in-memory examples only.
    split = datasets.load_tfds(
        builder, "train", "image", "question", "answers", image_size=8
    )
    assert list(split["responses"]) == ["cat"] * 3
    assert split["answers"][0] == ["cat", "dog", "dog", "cat", "cat"]
    assert sorted(split["images"][:, 0, 0, 0]) == [0, 50, 100]
    assert split["prompts"][0].startswith("answer en What is ")
    split = datasets.load_tfds(
        "toy_vqa_for_keras_pam",
        "train[:2]",
        "image",
        "question",
        "answer",
        data_dir=os.fspath(tmp_path),
    )
    assert list(split["responses"]) == ["yes", "yes"]


# Registry -------------------------------------------------------------------


def test_registry_values():
    hp = datasets.PAPER_TASKS
    coin = {"ScienceQA", "TextVQA", "GQA", "VizWizVQA", "VQAv2", "OCR-VQA"}
    assert coin <= set(hp)
    expected = {
        "ScienceQA": (20, 128, 0.0, 0.0),
        "TextVQA": (5, 256, 0.0, 0.0),
        "GQA": (1, 256, 0.0, 0.0),
        "VizWizVQA": (10, 256, 0.0, 0.0),
        "VQAv2": (10, 256, 1e-6, 0.0),
        "OCR-VQA": (3, 128, 0.0, 0.0),
        "RSVQA-lr": (3, 256, 0.0, 0.2),
        "AI2D": (10, 256, 1e-6, 0.0),
        "OKVQA": (10, 128, 0.0, 0.0),
        "AOKVQA-MC": (15, 128, 0.0, 0.0),
        "ActivityNet-QA": (1, 128, 1e-6, 0.0),
        "MSRVTT-QA": (1, 128, 0.0, 0.0),
        "MSVD-QA": (1, 128, 3e-7, 0.0),
    }
    assert set(hp) == set(expected)
    for name, values in expected.items():
        got = datasets.hyperparameters(name)
        assert (
            got.epochs,
            got.batch_size,
            got.weight_decay,
            got.label_smoothing,
        ) == values
        assert got.metric in ("vqa", "exact")
    assert hp["ScienceQA"].metric == "exact"
    assert hp["VQAv2"].metric == "vqa"
    assert datasets.hyperparameters("vqav2") is hp["VQAv2"]
    assert datasets.COIN_ORDERS["order1"] == (
        "ScienceQA",
        "TextVQA",
        "GQA",
        "VizWizVQA",
        "VQAv2",
        "OCR-VQA",
    )
    assert datasets.COIN_ORDERS["order2"][0] == "GQA"
    assert datasets.COIN_ORDERS["order3"][0] == "TextVQA"
    for order in datasets.COIN_ORDERS.values():
        assert set(order) == coin
    with pytest.raises(ValueError, match="Known tasks: ScienceQA"):
        datasets.hyperparameters("ImageNet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp["GQA"].epochs = 3


def test_one_split_check_for_the_learner_and_the_data_sets():
    task = datasets.make_task("color", num_train=3, num_test=1, **SMALL)
    split = dict(task.train, answers=[["red"], [], ["blue"]])
    for check in (datasets.validate_split, data_lib.as_examples):
        with pytest.raises(ValueError, match="example 1 has none"):
            check(split)
    split = dict(task.train, responses=np.arange(3))
    for check in (datasets.validate_split, data_lib.as_examples):
        with pytest.raises(ValueError, match="must hold strings"):
            check(split)


# Streaming loaders ----------------------------------------------------------


def _streamed(split):
    """A `StreamingSplit` read back into a dict, as `as_examples` reads."""
    from keras_pam.streaming_split import StreamingSplit

    assert isinstance(split, StreamingSplit)
    return data_lib.as_examples(split.rows())


def _assert_same_split(streamed, split):
    assert sorted(streamed) == sorted(split)
    np.testing.assert_array_equal(streamed["images"], split["images"])
    for key in ("prompts", "responses"):
        assert list(streamed[key]) == list(split[key])
    if "answers" in split:
        assert [list(a) for a in streamed["answers"]] == [
            list(a) for a in split["answers"]
        ]


def test_load_llava_json_streams_the_same_split(tmp_path):
    records = [
        _record("a.png", "What color is it?", "Red"),
        _record("b.jpg", "Is it big?", " yes "),
    ]
    records[1]["conversations"] += [
        {"from": "human", "value": "And red?"},
        {"from": "gpt", "value": "No"},
    ]
    path = _write_llava(tmp_path, records)
    split = datasets.load_llava_json(path, tmp_path, image_size=24)
    stream = datasets.load_llava_json(
        path, tmp_path, image_size=24, stream=True
    )
    assert stream.num_examples == 3  # Known from the JSON, not counted.
    _assert_same_split(_streamed(stream), split)
    # With the annotators' answers, and a missing image found at once.
    task = datasets.make_task("color", num_train=1, num_test=3, **SMALL)
    scored = dict(task.test)
    scored["answers"] = datasets.object_array(
        [["Red", "red", "blue"], ["green"], ["a", "b", "c", "d"]]
    )
    path = datasets.write_llava_json(scored, tmp_path / "test.json", tmp_path)
    split = datasets.load_llava_json(path, tmp_path, image_size=32)
    stream = datasets.load_llava_json(
        path, tmp_path, image_size=32, stream=True
    )
    _assert_same_split(_streamed(stream), split)
    with open(path) as f:
        os.remove(os.path.join(tmp_path, json.load(f)[1]["image"]))
    with pytest.raises(ValueError, match="image file not found"):
        datasets.load_llava_json(path, tmp_path, stream=True)


def test_load_tfds_streams_the_same_split(tfds):
    tf = pytest.importorskip("tensorflow")

    def vqa(self, split, decoders=None, read_config=None, **kwargs):
        del self, split, decoders, read_config, kwargs
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": np.stack(
                    [np.full((8, 6, 1), v, np.uint8) for v in (0, 90, 180)]
                ),
                "qa": {
                    "question": ["What  is\nit?", "Which one?", "Why?"],
                    "answers": [
                        ["Cat", "dog", "dog"],
                        ["a", "b", "b"],
                        ["x", "y", "x"],
                    ],
                },
            }
        )

    layouts = [
        (vqa, ("mnist", "test", "image", "qa/question", "qa/answers")),
        (
            _clevr_dataset(4),
            (
                "clevr",
                "validation",
                "image",
                "question_answer/question",
                "question_answer/answer",
            ),
        ),
    ]
    for as_dataset, arguments in layouts:
        with tfds.testing.mock_data(as_dataset_fn=as_dataset):
            split = datasets.load_tfds(*arguments, image_size=4)
            stream = datasets.load_tfds(*arguments, image_size=4, stream=True)
            _assert_same_split(_streamed(stream), split)
            assert stream.num_examples == len(split["prompts"])  # Counted.
            with pytest.raises(ValueError, match="'nope' not found"):
                datasets.load_tfds(*arguments[:3], "nope", "x", stream=True)


def test_choice_num_options_is_checked():
    grid = Grid(64, 16)
    rng = np.random.default_rng(0)
    _, prompt, answer = generated._gen_choice(rng, grid, num_options=3)
    assert " c: " in prompt and answer in ("a", "b", "c")
    with pytest.raises(ValueError, match="2 or 3"):
        generated._gen_choice(rng, grid, num_options=4)
    with pytest.raises(ValueError, match="16"):
        generated._gen_choice(rng, Grid(32, 8), num_options=3)
