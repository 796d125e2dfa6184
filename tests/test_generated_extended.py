"""The extended CoIN sequence's generated tasks and the video QA analogues."""

import collections

import numpy as np
import pytest
from scipy import ndimage

from keras_pam import datasets
from keras_pam.datasets import generated
from keras_pam.datasets import generated_video
from keras_pam.datasets import registry

NUM_TRAIN = 300
NUM_TEST = 100
VIDEO_TRAIN = 600
VIDEO_TEST = 200
# The tiny test model's grid: 32x32 images in 8-pixel patches.
SMALL = {"image_size": 32, "patch_size": 8}


@pytest.fixture(scope="module")
def tasks():
    return {
        name: datasets.make_task(name, NUM_TRAIN, NUM_TEST, seed=0)
        for name in datasets.EXTENDED_TASK_NAMES
    }


@pytest.fixture(scope="module")
def video_tasks():
    return {
        name: datasets.make_video_task(name, VIDEO_TRAIN, VIDEO_TEST, seed=0)
        for name in datasets.VIDEO_TASK_NAMES
    }


def _keys(split):
    return {
        (image.tobytes(), prompt)
        for image, prompt in zip(split["images"], split["prompts"], strict=True)
    }


def _check_split_text(split, vocabulary):
    for prompt in split["prompts"]:
        assert prompt.startswith("answer en ") and prompt.endswith("\n")
        assert prompt.count("\n") == 1
        assert prompt.isascii() and prompt == prompt.lower()
    for response in split["responses"]:
        assert response in vocabulary
        assert response.isascii() and response.isalpha()
        assert response == response.lower()


# Orders and registries.


def test_extended_order_maps_the_papers_sequence():
    assert len(datasets.EXTENDED_ORDER) == 10
    assert len(set(datasets.EXTENDED_ORDER)) == 10
    for coin, name in zip(
        registry.EXTENDED_COIN_ORDER, datasets.EXTENDED_ORDER, strict=True
    ):
        assert datasets.COIN_ANALOGUES[coin] == name
        # The paper's Table 4 recipe exists for every analogue.
        assert datasets.hyperparameters(coin).metric == (
            datasets.make_task(name, 1, 1).metric
        )
    assert datasets.EXTENDED_ORDER == (
        "choice",
        "digits",
        "mix_choice",
        "sklearn_digits",
        "land_cover",
        "shape",
        "position",
        "facts",
        "color",
        "diagram",
    )
    assert set(datasets.EXTENDED_TASK_NAMES) < set(datasets.EXTENDED_ORDER)
    # The three CoIN orders and the seven original tasks are unchanged.
    assert set(datasets.ORDERS) == {"order1", "order2", "order3"}
    assert datasets.ALL_ORDERS == dict(
        datasets.ORDERS, extended=datasets.EXTENDED_ORDER
    )
    assert len(datasets.TASK_NAMES) == 7
    assert not set(datasets.TASK_NAMES) & set(datasets.EXTENDED_TASK_NAMES)
    assert datasets.ALL_TASK_NAMES == (
        datasets.TASK_NAMES + datasets.EXTENDED_TASK_NAMES
    )


def test_make_suite_extended():
    suite = datasets.make_suite("extended", num_train=3, num_test=2, seed=1)
    assert [t.name for t in suite] == list(datasets.EXTENDED_ORDER)
    for task in suite:
        assert task.num_train == 3 and task.num_test == 2
    suite = datasets.make_suite(tasks=["diagram", "color"], num_train=2)
    assert [t.name for t in suite] == ["diagram", "color"]
    with pytest.raises(ValueError, match="extended"):
        datasets.make_suite("nope")


def test_video_order_maps_the_papers_sequence():
    assert datasets.VIDEO_ORDER == ("direction", "appearances", "order")
    assert datasets.VIDEO_ORDERS == {"video": datasets.VIDEO_ORDER}
    for paper, name in zip(
        registry.VIDEO_QA_ORDER, datasets.VIDEO_ORDER, strict=True
    ):
        assert datasets.VIDEO_ANALOGUES[paper] == name
        assert datasets.hyperparameters(paper).metric == "exact"
    suite = datasets.make_video_suite(num_train=2, num_test=1, num_frames=3)
    assert [t.name for t in suite] == list(datasets.VIDEO_ORDER)
    suite = datasets.make_video_suite(tasks=["order"], num_train=2)
    assert [t.name for t in suite] == ["order"]
    with pytest.raises(ValueError, match="Known video orders"):
        datasets.make_video_suite("order1")
    with pytest.raises(TypeError):
        datasets.make_video_suite(tasks="order")
    with pytest.raises(ValueError, match="Known video tasks"):
        datasets.make_video_suite(tasks=["color"])


def _words(texts):
    return {w for t in texts for w in t.split()}


def test_vocabulary_texts_cover_the_extended_tasks():
    # A tokenizer trained on `vocabulary_texts` (the shipped base's) knows
    # every word of every generated task's prompts and answers, the
    # extended tasks' included.
    words = _words(datasets.vocabulary_texts())
    assert {"yes", "no", "arrow", "water", "mixed", "opposite"} <= words
    for name in datasets.ALL_TASK_NAMES:
        assert set(datasets.answer_vocabulary(name)) <= words, name
        for grid in ({}, SMALL):
            task = datasets.make_task(name, 60, 0, seed=2, **grid)
            split = task.train
            assert _words(split["prompts"]) <= words, name
            assert _words(split["responses"]) <= words, name
    for text in (
        generated.OPPOSITE_PROMPT,
        generated.CORNERS_PROMPT,
        *generated.LAND_COVER_PROMPTS.values(),
    ):
        assert text in datasets.vocabulary_texts()


def test_vocabulary_texts_hold_every_video_answer():
    # The video answers are words of the shipped base's tokenizer, which
    # is trained on these texts: a word it lacks is `<unk>`, and
    # two such answers would read alike. (Only fixed words of the video
    # questions may be unknown.)
    from keras_pam.models.tiny_pali_gemma import BASE_TEXTS

    # The tokenizer learns `BASE_TEXTS` and `vocabulary_texts` together.
    words = _words(list(BASE_TEXTS) + datasets.vocabulary_texts())
    for name in datasets.VIDEO_TASK_NAMES:
        answers = set(datasets.video_answer_vocabulary(name))
        assert answers <= words, (name, sorted(answers - words))


# The four new image tasks.


@pytest.mark.parametrize("name", generated.EXTENDED_TASK_NAMES)
def test_task_format(tasks, name):
    task = tasks[name]
    assert isinstance(task, datasets.Task)
    assert task.name == name and task.description
    assert (task.image_size, task.patch_size) == (64, 16)
    vocabulary = set(datasets.answer_vocabulary(name))
    for split, n in ((task.train, NUM_TRAIN), (task.test, NUM_TEST)):
        assert datasets.validate_split(split) == n
        assert split["images"].shape == (n, 64, 64, 3)
        assert split["images"].dtype == np.uint8
        _check_split_text(split, vocabulary)
        if task.metric == "vqa":
            for answers, response in zip(
                split["answers"], split["responses"], strict=True
            ):
                assert answers == [response] * generated.NUM_ANNOTATORS
        else:
            assert "answers" not in split
        assert split["images"].std(axis=(1, 2, 3)).min() > 0
    counts = collections.Counter(task.train["responses"])
    assert set(counts) == vocabulary
    assert counts.most_common(1)[0][1] / task.num_train < 0.6


def test_metrics_follow_the_paper():
    for name in datasets.EXTENDED_TASK_NAMES:
        coin = {a: c for c, a in datasets.COIN_ANALOGUES.items()}[name]
        metric = datasets.make_task(name, 1, 1).metric
        assert metric == datasets.hyperparameters(coin).metric


@pytest.mark.parametrize("name", generated.EXTENDED_TASK_NAMES)
def test_train_test_disjoint(tasks, name):
    assert not _keys(tasks[name].train) & _keys(tasks[name].test)


@pytest.mark.parametrize("name", generated.EXTENDED_TASK_NAMES)
def test_determinism(tasks, name):
    again = datasets.make_task(name, NUM_TRAIN, NUM_TEST, seed=0)
    for key in ("images", "prompts", "responses"):
        np.testing.assert_array_equal(again.train[key], tasks[name].train[key])
        np.testing.assert_array_equal(again.test[key], tasks[name].test[key])
    other = datasets.make_task(name, 20, 0, seed=1)
    assert not np.array_equal(other.train["images"], again.train["images"][:20])


@pytest.mark.parametrize("name", generated.EXTENDED_TASK_NAMES)
def test_other_image_sizes(name):
    task = datasets.make_task(name, 6, 2, seed=3, **SMALL)
    assert task.train["images"].shape == (6, 32, 32, 3)
    assert task.test["images"].shape == (2, 32, 32, 3)
    assert (task.image_size, task.patch_size) == (32, 8)
    task = datasets.make_task(name, 3, 1, image_size=96, seed=3)
    assert task.train["images"].shape == (3, 96, 96, 3)
    assert (task.image_size, task.patch_size) == (96, 16)


def _pictured_colors(image):
    return {
        name
        for name, rgb in generated.COLORS.items()
        if (image == np.array(rgb, np.uint8)).all(-1).any()
    }


def _options(prompt):
    """`{"a": word, ...}` of a multiple-choice prompt."""
    parts = prompt.split()
    return {
        p[:-1]: parts[i + 1]
        for i, p in enumerate(parts)
        if p in ("a:", "b:", "c:")
    }


def test_mix_choice_needs_the_picture_and_the_mixing_rule(tasks):
    split = tasks["mix_choice"].train
    for image, prompt, answer in zip(
        split["images"], split["prompts"], split["responses"], strict=True
    ):
        (color,) = _pictured_colors(image)
        assert color in generated.PRIMARY_COLORS
        partner = prompt.split(" with ")[1].split()[0]
        assert partner in generated.PRIMARY_COLORS and partner != color
        mix = generated.COLOR_MIXES[tuple(sorted((color, partner)))]
        options = _options(prompt)
        assert len(options) == 2
        assert options[answer] == mix
        # The mix of the other primary colour is an option too: without
        # the picture the question is a coin flip.
        (third,) = set(generated.PRIMARY_COLORS) - {color, partner}
        other = generated.COLOR_MIXES[tuple(sorted((third, partner)))]
        assert other in options.values()


def test_facts_answers_follow_the_world_rules(tasks):
    split = tasks["facts"].train
    kinds = collections.Counter()
    for image, prompt, answer in zip(
        split["images"], split["prompts"], split["responses"], strict=True
    ):
        (color,) = _pictured_colors(image)
        if prompt == generated.OPPOSITE_PROMPT:
            assert answer == generated.OPPOSITE_COLORS[color]
            assert answer != color
        else:
            assert prompt == generated.CORNERS_PROMPT
            assert answer in set(generated.SHAPE_CORNERS.values())
        kinds[prompt] += 1
    assert min(kinds.values()) > 0.3 * len(split["prompts"])


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("grid", [{}, SMALL], ids=["64-16", "32-8"])
def test_diagram_answer_is_the_arrows_end(grid):
    # Recompute from the drawing: the ink's heavier end is the arrow's
    # head; the shape nearest the head is the target, the one nearest the
    # tail the source.
    task = datasets.make_task("diagram", 80, 0, seed=4, **grid)
    patch = task.patch_size
    checked = 0
    for image, prompt, answer in zip(
        task.train["images"],
        task.train["prompts"],
        task.train["responses"],
        strict=True,
    ):
        options = _options(prompt)
        assert len(options) == 2
        # The three shapes: each whole inside a cell of its own.
        cells = {}
        for color in _pictured_colors(image):
            ys, xs = np.nonzero(
                (image == np.array(generated.COLORS[color], np.uint8)).all(-1)
            )
            (cell,) = {
                (int(y) // patch, int(x) // patch) for y, x in zip(ys, xs)
            }
            cells[color] = cell
        assert len(cells) == len(set(cells.values())) == 3
        if not set(options.values()) <= set(generated.COLOR_NAMES):
            assert set(options.values()) <= set(generated.SHAPES)
            continue
        pictured = _pictured_colors(image)
        assert set(options.values()) < pictured
        ink = (image < 60).all(-1)
        points = np.argwhere(ink)[:, ::-1].astype(float)
        centre = points.mean(0)
        axis = np.linalg.svd(points - centre)[2][0]
        along = (points - centre) @ axis
        low, high = points[np.argmin(along)], points[np.argmax(along)]
        mid = (along.min() + along.max()) / 2
        head, tail = (
            (high, low)
            if (along > mid).sum() > (along < mid).sum()
            else (low, high)
        )
        centres = {
            color: _centroid(
                (image == np.array(generated.COLORS[color], np.uint8)).all(-1)
            )
            for color in pictured
        }

        def nearest(point):
            return min(
                centres, key=lambda c: np.linalg.norm(centres[c] - point)
            )

        wanted = nearest(head) if "point to" in prompt else nearest(tail)
        assert options[answer] == wanted
        # The options are the arrow's two ends, never the third shape.
        assert set(options.values()) == {nearest(head), nearest(tail)}
        # The arrow joins two cells with at least one cell between them.
        joined = np.subtract(cells[nearest(head)], cells[nearest(tail)])
        assert np.abs(joined).max() >= 2
        checked += 1
    assert checked >= 25


def test_land_cover_answers_match_the_tile(tasks):
    split = tasks["land_cover"].train
    prompts = generated.LAND_COVER_PROMPTS
    roofs = np.array(generated._ROOFS, np.uint8)
    checked = collections.Counter()
    for image, prompt, answer in zip(
        split["images"], split["prompts"], split["responses"], strict=True
    ):
        # Textured: far from the plain backgrounds of the shape world.
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200
        roof = (image[:, :, None, :] == roofs).all(-1).any(-1)
        labels, num_buildings = ndimage.label(roof)
        # Each building is a square whole inside a cell of its own.
        patch = tasks["land_cover"].patch_size
        cells = set()
        for rows, columns in ndimage.find_objects(labels):
            assert rows.stop - rows.start == columns.stop - columns.start
            (cell,) = {
                (r // patch, c // patch)
                for r in (rows.start, rows.stop - 1)
                for c in (columns.start, columns.stop - 1)
            }
            cells.add(cell)
        assert len(cells) == num_buildings
        rgb = image.astype(int)
        water = (rgb[..., 2] > rgb[..., 1] + 25) & (rgb[..., 2] > rgb[..., 0])
        if prompt == prompts["buildings"]:
            assert answer == generated.NUMBER_WORDS[num_buildings]
        elif prompt == prompts["water"]:
            assert (answer == "yes") == (water.sum() > 20)
        elif prompt == prompts["urban"] and answer == "yes":
            assert num_buildings >= 3
        elif prompt == prompts["compare"] and answer == "yes":
            assert num_buildings >= 1
        checked[prompt] += 1
    assert set(checked) == set(prompts.values())


def test_prompts_are_fixed_apart_from_known_words(tasks, video_tasks):
    # The extended tasks' prompts hold only known words; a video prompt
    # is a fixed question whose unknown words are fixed text, never a slot
    # (its colours are known).
    known = _words(datasets.vocabulary_texts())
    for name, task in tasks.items():
        assert _words(task.train["prompts"]) <= known, name
    templates = {
        "direction": generated_video.DIRECTION_PROMPT,
        "appearances": generated_video.APPEARANCES_QUESTION,
        "order": generated_video.ORDER_QUESTION,
    }
    for name, task in video_tasks.items():
        unknown = _words(task.train["prompts"]) - known
        assert unknown <= set(templates[name].split()), (name, unknown)
        assert not unknown & set(generated.COLOR_NAMES)


# Tokenizer: the shipped base must read every answer back.


@pytest.fixture(scope="module")
def tokenizer():
    import keras_hub

    from keras_pam.models import shipped_base_preset

    return keras_hub.models.PaliGemmaTokenizer.from_preset(
        shipped_base_preset()
    )


def _ids(tokenizer, text):
    import keras

    return [int(i) for i in keras.ops.convert_to_numpy(tokenizer(text))]


def _all_answers():
    words = set()
    for name in datasets.ALL_TASK_NAMES:
        words |= set(datasets.answer_vocabulary(name))
    for name in datasets.VIDEO_TASK_NAMES:
        words |= set(datasets.video_answer_vocabulary(name))
    return sorted(words)


def test_every_answer_round_trips_the_shipped_tokenizer(tokenizer):
    # `position`'s sides, the extended and the video tasks' answers.
    unknown = tokenizer.token_to_id("<unk>")
    for word in _all_answers():
        ids = _ids(tokenizer, word)
        assert unknown not in ids, word
        text = tokenizer.detokenize(np.array(ids, "int32"))
        if not isinstance(text, str):
            import keras

            text = keras.ops.convert_to_numpy(text).item()
            text = text.decode() if isinstance(text, bytes) else text
        assert text.strip() == word


def test_different_prompts_stay_different_once_tokenized(
    tokenizer, tasks, video_tasks
):
    # The few words the tokenizer does not know are fixed question text:
    # two different prompts of a task never tokenize alike.
    position = datasets.make_task("position", 200, 0, seed=1)
    for task in [position, *tasks.values(), *video_tasks.values()]:
        prompts = sorted(set(task.train["prompts"]))
        ids = {tuple(_ids(tokenizer, p)) for p in prompts}
        assert len(ids) == len(prompts), task.name


def test_every_example_fits_the_shipped_sequence_length(
    tokenizer, tasks, video_tasks
):
    import keras_hub

    from keras_pam.models import shipped_base_preset

    preprocessor = keras_hub.models.PaliGemmaCausalLMPreprocessor.from_preset(
        shipped_base_preset()
    )
    for task in list(tasks.values()) + list(video_tasks.values()):
        split = task.train
        longest = max(
            len(_ids(tokenizer, prompt)) + len(_ids(tokenizer, response))
            for prompt, response in set(
                zip(split["prompts"], split["responses"], strict=True)
            )
        )
        # With the start and end tokens, nothing is truncated.
        assert longest + 2 <= preprocessor.sequence_length, task.name


# The video tasks.


@pytest.mark.parametrize("name", generated_video.VIDEO_TASK_NAMES)
def test_video_task_format(video_tasks, name):
    task = video_tasks[name]
    assert task.name == name and task.metric == "exact" and task.description
    assert (task.image_size, task.patch_size) == (64, 16)
    vocabulary = set(datasets.video_answer_vocabulary(name, num_frames=4))
    for split, n in ((task.train, VIDEO_TRAIN), (task.test, VIDEO_TEST)):
        assert datasets.validate_split(split) == n
        assert split["images"].shape == (n, 4, 64, 64, 3)
        assert split["images"].dtype == np.uint8
        _check_split_text(split, vocabulary)
        assert "answers" not in split
    counts = collections.Counter(task.train["responses"])
    assert set(counts) == vocabulary
    assert counts.most_common(1)[0][1] / task.num_train < 0.4
    assert not _keys(task.train) & _keys(task.test)


@pytest.mark.parametrize("name", generated_video.VIDEO_TASK_NAMES)
def test_video_determinism_and_sizes(video_tasks, name):
    again = datasets.make_video_task(name, 50, 20, seed=0)
    for key in ("images", "prompts", "responses"):
        np.testing.assert_array_equal(
            again.train[key], video_tasks[name].train[key][:50]
        )
        np.testing.assert_array_equal(
            again.test[key], video_tasks[name].test[key][:20]
        )
    other = datasets.make_video_task(name, 50, 0, seed=1)
    assert not np.array_equal(other.train["images"], again.train["images"])
    task = datasets.make_video_task(
        name, 5, 3, image_size=48, num_frames=6, seed=2
    )
    assert task.train["images"].shape == (5, 6, 48, 48, 3)
    assert task.test["images"].shape == (3, 6, 48, 48, 3)
    assert (task.image_size, task.patch_size) == (48, 16)
    task = datasets.make_video_task(name, 4, 2, num_frames=3, seed=2, **SMALL)
    assert task.train["images"].shape == (4, 3, 32, 32, 3)
    assert (task.image_size, task.patch_size) == (32, 8)
    suite = datasets.make_video_suite(
        num_train=2, num_test=1, num_frames=3, **SMALL
    )
    assert [(t.image_size, t.patch_size) for t in suite] == [(32, 8)] * 3


def test_video_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        datasets.make_video_task("direction", num_frames=1)
    with pytest.raises(ValueError, match="num_frames"):
        datasets.make_video_task("order", num_frames=2)
    with pytest.raises(ValueError, match="Known video tasks"):
        datasets.make_video_task("color")
    with pytest.raises(ValueError, match="image_size"):
        datasets.make_video_task("direction", image_size=16)
    with pytest.raises(ValueError, match="multiple of patch_size 16"):
        datasets.make_video_task("order", image_size=40)
    with pytest.raises(ValueError, match="patch_size must be >= 8"):
        datasets.make_video_task("appearances", image_size=32, patch_size=4)
    with pytest.raises(ValueError, match="at least 3 patches"):
        datasets.make_video_suite(image_size=32, patch_size=32)
    with pytest.raises(ValueError, match="seed"):
        datasets.make_video_task("direction", seed=-1)
    assert datasets.make_video_task("order", 2, 1, num_frames=3).num_train == 2
    assert (
        datasets.video_answer_vocabulary("appearances")
        == (generated.NUMBER_WORDS[:6])
    )
    assert datasets.video_answer_vocabulary("appearances", 3) == (
        "zero",
        "one",
        "two",
        "three",
    )


# One frame is not enough: per-frame summaries from the pixels.


def _background_of(frame):
    colors, counts = np.unique(frame.reshape(-1, 3), axis=0, return_counts=True)
    return colors[np.argmax(counts)]


def _wrapped_centroid(frame):
    """The shape's centre on the wrapped-around image, `(x, y)`."""
    size = frame.shape[0]
    mask = (frame != _background_of(frame)).any(-1)
    ys, xs = np.nonzero(mask)
    angles = [2 * np.pi * v / size for v in (xs, ys)]
    return np.array(
        [
            np.arctan2(np.sin(a).mean(), np.cos(a).mean()) % (2 * np.pi)
            for a in angles
        ]
    ) * (size / (2 * np.pi))


def _direction_of(clip):
    size = clip.shape[1]
    step = _wrapped_centroid(clip[1]) - _wrapped_centroid(clip[0])
    dx, dy = (step + size / 2) % size - size / 2
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "below" if dy > 0 else "above"


def _shows(frame, color):
    rgb = np.array(generated.COLORS[color], np.uint8)
    return bool((frame == rgb).all(-1).any())


def _named_colors(prompt):
    words = prompt.split()
    return [w for w in words if w in generated.COLORS]


def _frame_summary(name, frame, prompt, patch):
    """What one frame tells about the question: the whole of it that
    matters for the answer (for `direction`, the shape's cell)."""
    if name == "direction":
        x, y = _wrapped_centroid(frame) // patch
        return int(x), int(y)
    if name == "appearances":
        return _shows(frame, _named_colors(prompt)[0])
    first, second = _named_colors(prompt)
    return _shows(frame, first), _shows(frame, second)


def _clip_answer(name, clip, prompt):
    """The answer read from all the frames."""
    if name == "direction":
        return _direction_of(clip)
    colors = _named_colors(prompt)
    if name == "appearances":
        count = sum(_shows(frame, colors[0]) for frame in clip)
        return generated.NUMBER_WORDS[count]
    for frame in clip:
        for color in colors:
            if _shows(frame, color):
                return color


def _single_frame_accuracy(name, train, test, k, patch):
    """Test accuracy of the best lookup table from frame `k`'s summary,
    fitted on the train split (the order of the named colours kept)."""

    def rows(split):
        for clip, prompt, answer in zip(
            split["images"], split["prompts"], split["responses"], strict=True
        ):
            summary = _frame_summary(name, clip[k], prompt, patch)
            # An answer named in the prompt is given by its position.
            colors = _named_colors(prompt)
            label = colors.index(answer) if name == "order" else answer
            yield summary, label

    table = collections.defaultdict(collections.Counter)
    for summary, label in rows(train):
        table[summary][label] += 1
    overall = sum(table.values(), collections.Counter()).most_common(1)[0][0]
    hits = [
        (table[s].most_common(1)[0][0] if table[s] else overall) == label
        for s, label in rows(test)
    ]
    return float(np.mean(hits))


@pytest.mark.parametrize(
    "name, bound",
    [("direction", 0.4), ("appearances", 0.6), ("order", 0.85)],
)
def test_one_frame_is_not_enough(video_tasks, name, bound):
    task = video_tasks[name]
    # The whole clip answers every question...
    for split in (task.train, task.test):
        for clip, prompt, answer in zip(
            split["images"], split["prompts"], split["responses"], strict=True
        ):
            assert _clip_answer(name, clip, prompt) == answer
    # ... any one frame is far from it (chance: 1/4, 1/5, 1/2).
    for k in range(4):
        accuracy = _single_frame_accuracy(
            name, task.train, task.test, k, task.patch_size
        )
        assert accuracy < bound, (k, accuracy)


def test_direction_frames_are_shifts_of_one_uniform_scene(video_tasks):
    # Every frame is the first one shifted on the wrapped-around image by
    # one whole cell (one patch) a frame, in the answer's direction, from
    # a uniformly random cell: one frame has the same distribution for
    # every direction.
    task = video_tasks["direction"]
    patch, split = task.patch_size, task.train
    for clip, answer in zip(
        split["images"][:40], split["responses"][:40], strict=True
    ):
        size = clip.shape[1]
        shifts = {
            (dy, dx)
            for dy in range(size)
            for dx in range(size)
            if (dy == 0 or dx == 0)
            and np.array_equal(np.roll(clip[0], (dy, dx), (0, 1)), clip[1])
        }
        step_x, step_y = generated_video.DIRECTIONS[answer]
        assert shifts == {((step_y * patch) % size, (step_x * patch) % size)}
        dy, dx = shifts.pop()
        for k in range(2, clip.shape[0]):
            expected = np.roll(clip[0], (k * dy, k * dx), (0, 1))
            np.testing.assert_array_equal(clip[k], expected)
    # The first frame's place does not depend on the direction: for every
    # answer, it is any cell, and the centre of the image on average.
    size = split["images"].shape[2]
    cells = size // patch
    places = collections.defaultdict(list)
    for clip, answer in zip(split["images"], split["responses"], strict=True):
        places[answer].append(_wrapped_centroid(clip[0]))
    assert set(places) == set(generated_video.DIRECTIONS)
    for answer, centres in places.items():
        mean = np.mean(centres, axis=0)
        assert np.all(np.abs(mean - size / 2) < size * 3 / 32), (answer, mean)
        seen = {tuple(int(v) for v in c // patch) for c in centres}
        assert len(seen) >= cells * cells - 2, (answer, len(seen))
