"""Streamed splits: `tf.data.Dataset`s are trained on, scored and replayed
without being read into memory, with the results of the same split as a
dict."""

import os
import threading
import time

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import data as data_lib
from keras_pam import strategies
from keras_pam.strategies import TaskContext
from keras_pam.streaming_split import StreamingSplit

tf = pytest.importorskip("tensorflow")

KEYS = ("images", "prompts", "responses")
MIB = 2**20
# The host-memory growth allowed while training on a split of ten times
# its size. A new pipeline and its steps cost a fixed 20-40 MiB (measured
# on 2 CPU cores: JAX 40-42 MiB peak at 64, TensorFlow 28 MiB at 32); a
# TensorFlow step is slower, so its split is smaller.
MEMORY_LIMITS_MIB = {"jax": 64, "tensorflow": 48}


def as_dataset(split):
    return tf.data.Dataset.from_tensor_slices({k: split[k] for k in KEYS})


def global_state(learner):
    return {k: np.array(v) for k, v in learner.global_state.items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


class PeakRSS:
    """The peak growth of this process's resident memory (read from
    `/proc/self/statm` every 2 ms on a thread) inside a `with` block."""

    def __enter__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self.base = self._rss()
        self.peak = self.base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self):
        return self.peak - self.base


COLORS = ("red", "blue", "green")


def generated_split(num_examples, size=32, shuffle_buffer_size=256):
    """A split made example by example: float32 images of one colour."""
    colors = tf.constant(COLORS)

    def make_example(i):
        value = tf.cast(i % 3, "float32") / 2.0 + tf.cast(i % 7, "float32")
        return {
            "images": tf.fill((size, size, 3), value / 8.0),
            "prompts": tf.constant("answer en what color?\n"),
            "responses": tf.gather(colors, i % 3),
        }

    dataset = tf.data.Dataset.range(num_examples).map(make_example)
    return StreamingSplit(dataset, shuffle_buffer_size=shuffle_buffer_size)


@pytest.fixture(scope="module")
def learner(tiny_preset):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=2, align=False, merge=None, seed=0
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    return learner


def test_peak_rss_sees_an_allocation():
    with PeakRSS() as peak:
        block = np.ones(64 * MIB, "uint8")
        time.sleep(0.05)
    del block
    assert peak.growth >= 60 * MIB


def test_learn_task_streams_a_split_ten_times_the_memory_limit(learner):
    backend = keras.backend.backend()
    if backend not in MEMORY_LIMITS_MIB:
        pytest.skip(
            "torch's eager CPU train step is about 50x slower than JAX's: "
            "a split of ten times the memory limit does not train in a "
            "test's time (streaming on torch is tested below)."
        )
    limit = MEMORY_LIMITS_MIB[backend] * MIB
    bytes_per_example = 32 * 32 * 3 * 4  # float32 images
    # A multiple of the batch size: the last batch adds no compilation.
    num_examples = -(-10 * limit // bytes_per_example // 32) * 32
    split = generated_split(num_examples)
    assert split.num_examples == num_examples  # Known, not counted.
    decoded = num_examples * bytes_per_example
    assert decoded >= 10 * limit
    learner.reset(align=False, merge=None, seed=0)
    # Compile the step and warm the pipeline's buffers first.
    for name in ("warm_1", "warm_2"):
        learner.learn_task(
            generated_split(640), name=name, batch_size=32, verbose=0
        )
    start = time.time()
    with PeakRSS() as peak:
        report = learner.learn_task(split, name="big", batch_size=32, verbose=0)
    seconds = time.time() - start
    print(
        f"{backend}: {num_examples} examples, {decoded / MIB:.0f} MiB "
        f"decoded, limit {limit / MIB:.0f} MiB, peak RSS growth "
        f"{peak.growth / MIB:.1f} MiB, {seconds:.1f} s"
    )
    assert np.isfinite(report.history["loss"][-1])
    assert peak.growth < limit


def test_learn_task_on_a_dataset_gives_the_dict_adapter(learner, two_tasks):
    train = {k: two_tasks[0].train[k] for k in KEYS}
    states = []
    for data in (train, as_dataset(train), as_dataset(train).batch(5)):
        learner.reset(align=False, merge=None, seed=0)
        learner.learn_task(
            data, name="color", epochs=2, batch_size=8, verbose=0
        )
        states.append(global_state(learner))
    assert_same_state(states[0], states[1])
    assert_same_state(states[0], states[2])
    # A split larger than the shuffle window is shuffled otherwise, and
    # ordered as a dict without shuffling.
    states = []
    stream = StreamingSplit(as_dataset(train), shuffle_buffer_size=10)
    for data in (train, stream):
        learner.reset(align=False, merge=None, seed=0)
        learner.learn_task(
            data, name="color", batch_size=8, shuffle=False, verbose=0
        )
        states.append(global_state(learner))
    assert_same_state(states[0], states[1])


def test_epochs_are_reproducible_from_seed_and_epoch(two_tasks):
    train = {k: two_tasks[0].train[k] for k in KEYS}
    stream = StreamingSplit(as_dataset(train), shuffle_buffer_size=10)
    epochs = [
        np.concatenate(
            [
                b["images"]
                for b in stream.batches(8, shuffle=True, seed=3, epoch=e)
            ]
        )
        for e in range(3)
    ]
    again = np.concatenate(
        [b["images"] for b in stream.batches(8, shuffle=True, seed=3, epoch=2)]
    )
    np.testing.assert_array_equal(epochs[2], again)
    assert not np.array_equal(epochs[1], epochs[2])
    for images in epochs:  # Every example once per epoch.
        np.testing.assert_array_equal(
            np.sort(images.reshape(len(images), -1), 0),
            np.sort(train["images"].reshape(len(images), -1), 0),
        )
    # A resumed task's batches are those of the uninterrupted run.
    preprocessor = lambda batch: (batch["images"],)  # noqa: E731
    full = stream.training_dataset(8, preprocessor, True, 3, epochs=3)
    resumed = stream.training_dataset(
        8, preprocessor, True, 3, epochs=3, initial_epoch=2
    )
    full = np.concatenate([x for (x,) in full.as_numpy_iterator()])
    resumed = np.concatenate([x for (x,) in resumed.as_numpy_iterator()])
    np.testing.assert_array_equal(full[-len(resumed) :], resumed)
    np.testing.assert_array_equal(resumed, epochs[2])


def test_a_streamed_eval_split_scores_as_the_dict(learner, two_tasks):
    learner.reset(align=False, merge=None, seed=0)
    learner.scorer.batch_size = 5  # Several batches, the last one padded.
    test = dict(two_tasks[0].test)
    examples = data_lib.as_examples(test)
    predictions = learner.scorer.predict(examples, 4)
    # Half the references are the model's answers: a non-zero accuracy.
    responses = np.array(examples["responses"], dtype=object)
    half = len(responses) // 2
    responses[:half] = predictions[:half]
    split = {**{k: test[k] for k in KEYS}, "responses": responses}
    split.pop("answers", None)
    stream = learner.as_examples(
        tf.data.Dataset.from_tensor_slices(
            {**split, "responses": responses.astype(str)}
        )
    )
    assert isinstance(stream, StreamingSplit)
    assert learner.scorer.predict_stream(stream, 4) == predictions
    assert learner.evaluate_task(stream) == learner.evaluate_task(split)
    # With the annotators' answers (VQA accuracy), registered by name.
    with_answers = tf.data.Dataset.from_generator(
        lambda: (
            {
                "images": test["images"][i],
                "prompts": test["prompts"][i],
                "responses": test["responses"][i],
                "answers": list(test["answers"][i]),
            }
            for i in range(len(test["prompts"]))
        ),
        output_signature={
            "images": tf.TensorSpec((32, 32, 3), tf.uint8),
            "prompts": tf.TensorSpec((), tf.string),
            "responses": tf.TensorSpec((), tf.string),
            "answers": tf.TensorSpec((None,), tf.string),
        },
    )
    learner.add_eval_task("dict", test)
    learner.add_eval_task("stream", with_answers)
    row = learner.eval_tasks.row(learner.strategy)
    learner.scorer.batch_size = learner.eval_batch_size
    assert row["dict"] == row["stream"]


def test_reservoir_fills_from_a_stream_as_from_a_dict(two_tasks):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (300, 4, 4, 3)).astype("uint8")
    splits = [
        {
            "images": images[:n],
            "prompts": np.array([f"q {i}\n" for i in range(n)], object),
            "responses": np.array([f"a {i}" for i in range(n)], object),
        }
        for n in (300, 40)  # 300 crosses the stream's 256-example chunks.
    ]
    buffers = []
    for stream in (False, True):
        replay = strategies.ExperienceReplay(strategies.Finetune(), 50)
        for index, split in enumerate(splits):
            if stream:
                examples = data_lib.as_split(
                    tf.data.Dataset.from_tensor_slices(
                        {**split, **{k: split[k].astype(str) for k in KEYS[1:]}}
                    )
                )
                assert isinstance(examples, StreamingSplit)
            else:
                examples = data_lib.as_examples(split)
            task = TaskContext(name=str(index), index=index, examples=examples)
            replay.end_task(None, task)
        buffers.append(replay.buffer)
    assert replay.num_seen == 340
    for key in KEYS:
        assert buffers[0][key].dtype == buffers[1][key].dtype
        np.testing.assert_array_equal(buffers[0][key], buffers[1][key])
    # The union of a stream and the buffer holds both, every epoch.
    task = TaskContext(name="2", index=2, examples=examples)
    union = replay.training_data(task)
    assert union.num_examples == 40 + 50
    prompts = [
        p
        for b in union.batches(16, shuffle=True, seed=0, epoch=1)
        for p in b["prompts"].astype(str)
    ]
    assert sorted(prompts) == sorted(
        list(splits[1]["prompts"]) + list(replay.buffer["prompts"])
    )


def test_a_bad_stream_raises_before_the_learner_changes(learner, two_tasks):
    learner.reset(align=False, merge=None, seed=0)
    task = two_tasks[0]
    learner.learn_task(task.train, name="color", verbose=0)
    before = global_state(learner)
    train = {k: task.train[k] for k in KEYS}
    small = as_dataset(train).map(
        lambda row: {**row, "images": tf.image.resize(row["images"], (16, 16))}
    )
    with pytest.raises(ValueError, match="are 16x16, but the model takes"):
        learner.learn_task(small, name="shape", verbose=0)
    with pytest.raises(ValueError, match=r"missing the key\(s\) \['prompts'\]"):
        learner.learn_task(
            as_dataset(train).map(
                lambda r: {"images": r["images"], "responses": r["responses"]}
            ),
            name="shape",
            verbose=0,
        )
    with pytest.raises(ValueError, match="`train_data` is an empty dataset"):
        learner.learn_task(as_dataset(train).take(0), name="shape", verbose=0)

    def rows():  # The fifth example is smaller: found by the count.
        for i in range(len(train["prompts"])):
            image = train["images"][i]
            yield {
                "images": image[:16, :16] if i == 4 else image,
                "prompts": train["prompts"][i],
                "responses": train["responses"][i],
            }

    late = tf.data.Dataset.from_generator(
        rows,
        output_signature={
            "images": tf.TensorSpec((None, None, 3), tf.uint8),
            "prompts": tf.TensorSpec((), tf.string),
            "responses": tf.TensorSpec((), tf.string),
        },
    )
    with pytest.raises(ValueError, match="another shape than the first"):
        learner.learn_task(late, name="shape", verbose=0)
    assert learner.learned_task_names == ["color"]
    assert_same_state(global_state(learner), before)


def test_strategies_train_on_streams(tiny_preset, two_tasks, tmp_path):
    keras.utils.set_random_seed(0)
    streams = [as_dataset(task.train) for task in two_tasks]
    for strategy in (
        strategies.ExperienceReplay(strategies.PAM(), buffer_size=8),
        strategies.Multitask(num_tasks=2),
    ):
        learner = ContinualLearner.from_preset(
            tiny_preset, rank=2, strategy=strategy
        )
        learner.compile(optimizer=keras.optimizers.Adam(1e-2))
        for task, stream in zip(two_tasks, streams):
            learner.add_eval_task(task.name, as_dataset(task.test))
        for task, stream in zip(two_tasks, streams):
            report = learner.learn_task(
                stream, name=task.name, batch_size=16, verbose=0
            )
        assert np.isfinite(report.history["loss"][-1])
        assert learner.evaluate_all().matrix.shape == (2, 2)
    assert len(strategy.seen) == 2  # By reference.
    learner = ContinualLearner.from_preset(
        tiny_preset,
        rank=2,
        strategy=strategies.Multitask(num_tasks=2),
        run_dir=str(tmp_path / "run"),
    )
    with pytest.raises(ValueError, match="cannot be saved in the run folder"):
        learner.learn_task(streams[0], name="color", verbose=0)
    assert learner.learned_task_names == []
