"""Video PaliGemma: clips of F frames, one SigLIP tower, KerasHub presets,
LoRA on the image model's layers, and the learner on video splits."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import data as data_lib
from keras_pam.lora import enable_lora
from keras_pam.lora import lora_variables
from keras_pam.models import build_tiny_pali_gemma
from keras_pam.models.pali_gemma_preset import load_pali_gemma
from keras_pam.models.video_pali_gemma import PaliGemmaVideoBackbone
from keras_pam.models.video_pali_gemma import PaliGemmaVideoCausalLM
from keras_pam.models.video_pali_gemma import build_tiny_video_pali_gemma

SIZE = 16
FRAMES = 3
PATCHES = (SIZE // 8) ** 2


def clips(num, frames=FRAMES, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (num, frames, size, size, 3), dtype="uint8")


def video_split(num=4, frames=FRAMES, size=SIZE, seed=0):
    return {
        "images": clips(num, frames, size, seed),
        "prompts": np.array(["caption en\n"] * num, dtype=object),
        "responses": np.array(
            ["red circle", "blue square"] * (num // 2), dtype=object
        ),
    }


def logits(causal_lm, split):
    x, _, _ = causal_lm.preprocessor(
        {k: split[k] for k in ("images", "prompts", "responses")}
    )
    return keras.ops.convert_to_numpy(causal_lm(x))


@pytest.fixture(scope="module")
def video_lm():
    keras.utils.set_random_seed(0)
    return build_tiny_video_pali_gemma(num_frames=FRAMES, image_size=SIZE)


def test_logits_shape(video_lm):
    backbone = video_lm.backbone
    assert isinstance(video_lm, PaliGemmaVideoCausalLM)
    assert backbone.num_frames == FRAMES
    assert backbone.image_sequence_length == FRAMES * PATCHES
    assert tuple(backbone.input["images"].shape) == (
        None,
        FRAMES,
        SIZE,
        SIZE,
        3,
    )
    x, y, _ = video_lm.preprocessor(video_split(2))
    assert tuple(x["images"].shape) == (2, FRAMES, SIZE, SIZE, 3)
    out = video_lm(x)
    vocabulary = video_lm.preprocessor.tokenizer.vocabulary_size()
    assert tuple(out.shape) == (
        2,
        video_lm.preprocessor.sequence_length,
        vocabulary,
    )


def test_frames_share_the_vision_tower_in_order(video_lm):
    vit = video_lm.backbone.vit_encoder
    images = video_lm.preprocessor.image_converter(
        clips(2).reshape((-1, SIZE, SIZE, 3))
    )
    images = keras.ops.reshape(images, (2, FRAMES, SIZE, SIZE, 3))
    tokens = keras.ops.convert_to_numpy(vit(images))
    assert tokens.shape[:2] == (2, FRAMES * PATCHES)
    for f in range(FRAMES):
        # A clip of frame `f` only: its first tokens are frame `f`'s.
        same = keras.ops.repeat(images[:, f : f + 1], FRAMES, axis=1)
        alone = keras.ops.convert_to_numpy(vit(same))[:, :PATCHES]
        np.testing.assert_allclose(
            tokens[:, f * PATCHES : (f + 1) * PATCHES], alone, atol=1e-5
        )


def test_frame_order_matters(video_lm):
    split = video_split(2)
    swapped = dict(split, images=split["images"][:, ::-1])
    assert not np.allclose(logits(video_lm, split), logits(video_lm, swapped))


def test_one_frame_is_the_image_model():
    keras.utils.set_random_seed(1)
    image_lm = build_tiny_pali_gemma(image_size=SIZE)
    video_lm = PaliGemmaVideoCausalLM.from_image_causal_lm(image_lm, 1)
    assert video_lm.backbone.image_sequence_length == PATCHES
    split = video_split(2, frames=1)
    images = dict(split, images=split["images"][:, 0])
    expected = logits(image_lm, images)
    np.testing.assert_allclose(logits(video_lm, images), expected, atol=1e-5)
    # A one-frame clip is its image.
    np.testing.assert_allclose(logits(video_lm, split), expected, atol=1e-5)
    # LoRA goes on the same layers, with factors of the same shapes.
    image_layers = enable_lora(image_lm.backbone, rank=2)
    video_layers = enable_lora(video_lm.backbone, rank=2)
    assert [layer.name for layer in video_layers] == [
        layer.name for layer in image_layers
    ]
    # An adapter (factors by variable path) fits both models.
    image_factors = lora_variables(image_lm.backbone)
    video_factors = lora_variables(video_lm.backbone)
    assert list(video_factors) == list(image_factors)
    for path, variable in video_factors.items():
        assert variable.shape == image_factors[path].shape


def test_preset_round_trip_and_generate(video_lm, tmp_path):
    path = str(tmp_path / "video_preset")
    video_lm.save_to_preset(path)
    split = video_split(2)
    expected = logits(video_lm, split)
    for loaded in (
        keras_hub.models.PaliGemmaCausalLM.from_preset(path),
        load_pali_gemma(path),
    ):
        assert isinstance(loaded, PaliGemmaVideoCausalLM)
        assert isinstance(loaded.backbone, PaliGemmaVideoBackbone)
        assert loaded.backbone.num_frames == FRAMES
        assert loaded.preprocessor.num_frames == FRAMES
        np.testing.assert_allclose(logits(loaded, split), expected, atol=1e-5)
    prompts = {"images": split["images"], "prompts": list(split["prompts"])}
    batch = video_lm.generate(prompts, max_length=8)
    assert len(batch) == 2 and all(isinstance(t, str) for t in batch)
    one = video_lm.generate(
        {"images": split["images"][0], "prompts": split["prompts"][0]},
        max_length=8,
    )
    assert one == batch[0]


def test_preprocessor_frame_count(video_lm):
    with pytest.raises(ValueError, match="takes clips of 3 frames"):
        video_lm.preprocessor(video_split(2, frames=2))


@pytest.fixture(scope="module")
def video_learner():
    keras.utils.set_random_seed(2)
    causal_lm = build_tiny_video_pali_gemma(num_frames=2, image_size=SIZE)
    learner = ContinualLearner(causal_lm, rank=4, align_every=2)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    learner.learn_task(
        video_split(4, frames=2),
        name="video",
        eval_data=video_split(2, frames=2, seed=1),
        epochs=1,
        batch_size=2,
        verbose=0,
    )
    return learner


def state(learner):
    return (
        {k: np.array(v) for k, v in learner.global_state.items()},
        learner.learned_task_names,
        learner.eval_task_names,
    )


def assert_unchanged(learner, before):
    after = state(learner)
    for key, value in before[0].items():
        np.testing.assert_array_equal(after[0][key], value)
    assert after[1:] == before[1:]


def test_learner_on_video(video_learner):
    report = video_learner.evaluate_all()
    assert video_learner.learned_task_names == ["video"]
    assert report.matrix.shape == (1, 1)
    assert np.isfinite(report.matrix).all()
    examples = video_learner.as_examples(video_split(4, frames=2))
    dataset = data_lib.training_dataset(
        examples, 2, video_learner.causal_lm.preprocessor, shuffle=False
    )
    x, _, _ = next(iter(dataset))
    assert tuple(x["images"].shape) == (2, 2, SIZE, SIZE, 3)


@pytest.mark.parametrize(
    "split, message",
    [
        (
            dict(
                video_split(2, frames=2),
                images=[clips(1, 2)[0], clips(1, 1)[0]],
            ),
            "uneven frame counts: example 1 has 1 frames, example 0 2",
        ),
        (video_split(2, frames=2, size=8), "frames are 8x8, but the model"),
        (video_split(2, frames=3), "clips of 3 frames, but the model takes 2"),
        (
            dict(video_split(2, frames=2), images=clips(2, 2)[:, 0]),
            "single images",
        ),
    ],
    ids=["uneven", "size", "count", "images"],
)
def test_bad_clips(video_learner, split, message):
    before = state(video_learner)
    with pytest.raises(
        ValueError, match=r"`train_data\['images'\]`.*" + message
    ):
        video_learner.learn_task(split, name="bad", verbose=0)
    assert_unchanged(video_learner, before)


def test_video_split_to_image_learner():
    keras.utils.set_random_seed(3)
    learner = ContinualLearner(
        build_tiny_pali_gemma(image_size=SIZE), rank=4, align_every=2
    )
    before = state(learner)
    with pytest.raises(
        ValueError,
        match="a video example given to a learner built without video support",
    ):
        learner.learn_task(
            video_split(2, frames=2),
            name="video",
            eval_data=video_split(2, frames=2),
            verbose=0,
        )
    assert_unchanged(learner, before)


def test_as_examples_clips():
    split = video_split(2, frames=2)
    uneven = dict(split, images=[clips(1, 3)[0], clips(1, 1)[0]])
    with pytest.raises(ValueError, match="pad_frames=True"):
        data_lib.as_examples(uneven)
    padded = data_lib.as_examples(uneven, pad_frames=True)["images"]
    assert padded.shape == (2, 3, SIZE, SIZE, 3)
    np.testing.assert_array_equal(padded[1, 1], uneven["images"][1][0])
    np.testing.assert_array_equal(padded[1, 2], uneven["images"][1][0])
    padded = data_lib.as_examples(uneven, num_frames=4, pad_frames=True)
    assert padded["images"].shape == (2, 4, SIZE, SIZE, 3)
    # Unbatched clips from a generator, a one-frame model, an image split.
    rows = [
        {"images": c, "prompts": p, "responses": r}
        for c, p, r in zip(
            split["images"], split["prompts"], split["responses"]
        )
    ]
    examples = data_lib.as_examples(lambda: iter(rows), num_frames=2)
    np.testing.assert_array_equal(examples["images"], split["images"])
    one = data_lib.as_examples(video_split(2, frames=1), num_frames=1)
    assert one["images"].shape == (2, 1, SIZE, SIZE, 3)
    images = dict(split, images=split["images"][:, 0])
    tiled = data_lib.as_examples(images, num_frames=2, pad_frames=True)
    assert tiled["images"].shape == (2, 2, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="without video support"):
        data_lib.as_examples(split, image_size=SIZE)


def test_a_video_run_from_an_image_preset_resumes_as_video(
    tiny_preset, tmp_path
):
    """`from_preset(image_preset, num_frames=F)` makes a video learner;
    its run folder records `F`, so `resume` rebuilds the video model."""
    run_dir = str(tmp_path / "run")
    split = video_split(4, frames=2, size=32)
    learner = ContinualLearner.from_preset(
        tiny_preset, num_frames=2, rank=4, run_dir=run_dir
    )
    assert learner.num_frames == 2
    assert isinstance(learner.causal_lm, PaliGemmaVideoCausalLM)
    learner.learn_task(
        split, name="clips", eval_data=split, batch_size=2, verbose=0
    )
    resumed = ContinualLearner.resume(run_dir, eval_tasks={"clips": split})
    assert resumed.num_frames == 2
    assert resumed.learned_task_names == ["clips"]
    np.testing.assert_array_equal(
        resumed.evaluate_all().matrix, learner.evaluate_all().matrix
    )
    with pytest.raises(ValueError, match="video model of 2 frames"):
        load_pali_gemma(_saved_video_preset(tmp_path), num_frames=3)


def _saved_video_preset(tmp_path):
    path = str(tmp_path / "video_preset")
    build_tiny_video_pali_gemma(num_frames=2, image_size=SIZE).save_to_preset(
        path
    )
    return path
