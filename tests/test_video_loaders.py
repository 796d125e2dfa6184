"""Tests of keras_pam.datasets.video_loaders on tiny local files.

The tests write their own clips: folders of PNG frames and tiny video
files encoded with PyAV, each frame a distinct solid colour so that the
sampled frames can be told apart from their pixels. Nothing is downloaded.
"""

import json
import os
import re
import sys

import numpy as np
import pytest
from PIL import Image

from keras_pam import datasets
from keras_pam.datasets import video_loaders

# 12 distinct colours, at least 128 apart in one channel: lossy codecs keep
# each frame closest to its own colour.
PALETTE = np.array(
    [
        (r, g, b)
        for r in (0, 128, 255)
        for g in (0, 128, 255)
        for b in (0, 255)
        if (r, g, b) not in ((128, 128, 0), (128, 128, 255))
    ][:12],
    dtype=np.uint8,
)
CLIP_FRAMES = 12


def _colour_indices(clip):
    """The palette index of each frame of a `(F, S, S, 3)` clip."""
    means = clip.reshape(len(clip), -1, 3).mean(axis=1)
    distances = np.linalg.norm(
        means[:, None, :] - PALETTE[None].astype(np.float64), axis=-1
    )
    return distances.argmin(axis=1)


def _write_json(path, records):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f)
    return str(path)


def _write_frames(folder, count, size=(20, 30), names="frame_{}.png"):
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        image = np.zeros((size[1], size[0], 3), np.uint8) + PALETTE[index]
        Image.fromarray(image).save(os.path.join(folder, names.format(index)))


def _write_video(path, count, codec, size=32):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(count):
            pixels = np.zeros((size, size, 3), np.uint8) + PALETTE[index]
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return str(path)


# --- sample_frame_indices ------------------------------------------------


def test_sample_frame_indices_are_segment_centres():
    indices = datasets.sample_frame_indices(12, 4)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, [1, 4, 7, 10])
    np.testing.assert_array_equal(
        datasets.sample_frame_indices(12, 12), range(12)
    )
    np.testing.assert_array_equal(datasets.sample_frame_indices(10, 1), [5])
    np.testing.assert_array_equal(datasets.sample_frame_indices(1, 1), [0])
    np.testing.assert_array_equal(
        datasets.sample_frame_indices(np.int64(100), np.int32(8)),
        [6, 18, 31, 43, 56, 68, 81, 93],
    )


@pytest.mark.parametrize("total", [1, 2, 3, 7, 8, 9, 13, 30, 1000])
@pytest.mark.parametrize("count", [1, 4, 8, 16])
def test_sample_frame_indices_properties(total, count):
    indices = datasets.sample_frame_indices(total, count)
    assert indices.shape == (count,)
    assert indices.min() >= 0 and indices.max() < total
    assert np.all(np.diff(indices) >= 0)  # In temporal order.
    if total >= count:
        assert len(set(indices.tolist())) == count  # No frame repeated.
        # Even spread: consecutive indices differ by about total / count.
        gaps = np.diff(indices)
        if count > 1:
            assert gaps.max() - gaps.min() <= 1
    else:
        # Every frame is used, each repeated in place.
        assert set(indices.tolist()) == set(range(total))


def test_sample_frame_indices_short_clip_repeats_frames():
    np.testing.assert_array_equal(
        datasets.sample_frame_indices(3, 8), [0, 0, 0, 1, 1, 2, 2, 2]
    )
    np.testing.assert_array_equal(datasets.sample_frame_indices(1, 4), [0] * 4)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", None])
def test_sample_frame_indices_errors(bad):
    with pytest.raises(ValueError, match="num_frames_in_clip"):
        datasets.sample_frame_indices(bad, 4)
    with pytest.raises(ValueError, match="`num_frames`"):
        datasets.sample_frame_indices(12, bad)


# --- load_video_qa_json --------------------------------------------------


@pytest.fixture
def frames_root(tmp_path):
    root = tmp_path / "frames"
    # Names without zero padding: `frame_10.png` must sort after `_9`.
    _write_frames(root / "clipA", CLIP_FRAMES)
    (root / "clipA" / "notes.txt").write_text("not a frame")
    _write_frames(root / "clipB", 3, names="{:05d}.png")
    _write_frames(root / "video7", 5)
    return str(root)


def test_load_video_qa_json(tmp_path, frames_root):
    path = _write_json(
        tmp_path / "qa.json",
        [
            {"video": "clipA", "question": "What\ncolour?", "answer": " Red "},
            {"video_id": "clipB", "question": "How many?", "answer": 3},
            {"video_name": "clipA", "question": "Is it?", "answer": "YES"},
        ],
    )
    split = datasets.load_video_qa_json(
        path, frames_root, num_frames=4, image_size=16
    )
    assert split["images"].shape == (3, 4, 16, 16, 3)
    assert split["images"].dtype == np.uint8
    # PNG frames are exact: the sampled frames' colours give their indices.
    np.testing.assert_array_equal(
        _colour_indices(split["images"][0]), [1, 4, 7, 10]
    )
    np.testing.assert_array_equal(split["images"][0, 2, 5, 5], PALETTE[7])
    np.testing.assert_array_equal(
        _colour_indices(split["images"][1]), [0, 1, 1, 2]
    )
    np.testing.assert_array_equal(split["images"][2], split["images"][0])
    assert split["prompts"].dtype == object
    assert list(split["prompts"]) == [
        "answer en What colour?\n",
        "answer en How many?\n",
        "answer en Is it?\n",
    ]
    assert list(split["responses"]) == ["red", "3", "yes"]
    assert "answers" not in split
    assert datasets.validate_split({**split, "images": split["images"][:, 0]})


def test_load_video_qa_json_defaults(tmp_path, frames_root):
    path = _write_json(
        tmp_path / "qa.json",
        [{"video": "clipA", "question": "Q?", "answer": "a"}],
    )
    split = datasets.load_video_qa_json(path, frames_root, image_size=8)
    assert video_loaders.DEFAULT_NUM_FRAMES == 8
    assert split["images"].shape == (1, 8, 8, 8, 3)
    np.testing.assert_array_equal(
        _colour_indices(split["images"][0]),
        datasets.sample_frame_indices(CLIP_FRAMES, 8),
    )


def test_load_video_qa_json_annotators_answers(tmp_path, frames_root):
    path = _write_json(
        tmp_path / "qa.json",
        [
            {
                "video": "clipA",
                "question": "Colour?",
                "answer": ["Blue", "red", "blue", {"answer": "RED"}, "red"],
            },
            {
                "video": "clipB",
                "question": "Shape?",
                "answer": "Square",
                "answers": ["square", "box"],
            },
        ],
    )
    split = datasets.load_video_qa_json(
        path, frames_root, num_frames=2, image_size=8
    )
    assert list(split["responses"]) == ["red", "square"]
    assert split["answers"].dtype == object
    assert list(split["answers"]) == [
        ["blue", "red", "blue", "red", "red"],
        ["square", "box"],
    ]


def test_load_video_qa_json_max_examples_and_templates(tmp_path, frames_root):
    path = _write_json(
        tmp_path / "qa.json",
        [
            {"video_id": 7, "question": "First?", "answer": "a"},
            {"video_id": 7, "question": "Second?", "answer": "b"},
            # Never read: `max_examples` stops before it.
            {"video_id": 8, "question": "Third?", "answer": "c"},
        ],
    )
    split = datasets.load_video_qa_json(
        path,
        frames_root,
        num_frames=2,
        image_size=8,
        max_examples=2,
        prompt_template="question: {question}\n",
        video_template="video{video}",
    )
    assert split["images"].shape == (2, 2, 8, 8, 3)
    assert list(split["prompts"]) == [
        "question: First?\n",
        "question: Second?\n",
    ]
    assert list(split["responses"]) == ["a", "b"]
    split = datasets.load_video_qa_json(
        path,
        frames_root,
        num_frames=2,
        image_size=8,
        max_examples=1,
        video_template="video{video}",
    )
    assert len(split["prompts"]) == 1
    with pytest.raises(ValueError, match="video8"):
        datasets.load_video_qa_json(
            path, frames_root, image_size=8, video_template="video{video}"
        )


def test_load_video_qa_json_file_errors(tmp_path, frames_root):
    with pytest.raises(ValueError, match="JSON file not found.*missing"):
        datasets.load_video_qa_json(tmp_path / "missing.json", frames_root)
    bad = tmp_path / "bad.json"
    bad.write_text("[{'video': 1,")
    with pytest.raises(ValueError, match="Invalid JSON in .*bad.json"):
        datasets.load_video_qa_json(bad, frames_root)
    for content in ({"video": "clipA"}, []):
        path = _write_json(tmp_path / "other.json", content)
        with pytest.raises(ValueError, match="non-empty JSON list"):
            datasets.load_video_qa_json(path, frames_root)
    path = _write_json(
        tmp_path / "qa.json", [{"video": "clipA", "question": "Q", "answer": 1}]
    )
    with pytest.raises(ValueError, match="Frames folder not found"):
        datasets.load_video_qa_json(path, tmp_path / "nowhere")


@pytest.mark.parametrize(
    "record, message",
    [
        ({"question": "Q?", "answer": "a"}, "record 1 has no video"),
        ({"video": "", "question": "Q?", "answer": "a"}, "has no video"),
        ({"video": "clipA", "answer": "a"}, "record 1 has no 'question'"),
        ({"video": "clipA", "question": " ", "answer": "a"}, "'question'"),
        ({"video": "clipA", "question": "Q?"}, "record 1 has no 'answer'"),
        ({"video": "clipA", "question": "Q?", "answer": ""}, "empty"),
        ({"video": "clipA", "question": "Q?", "answer": []}, "is empty"),
        ({"video": "clipA", "question": "Q?", "answer": [3]}, "must be a str"),
        ({"video": "clipA", "question": "Q?", "answer": {}}, "must be a str"),
        ("clipA", "record 1 must be a dict"),
    ],
)
def test_load_video_qa_json_record_errors(
    tmp_path, frames_root, record, message
):
    good = {"video": "clipA", "question": "Q?", "answer": "a"}
    path = _write_json(tmp_path / "qa.json", [good, record])
    with pytest.raises(ValueError, match=message) as info:
        datasets.load_video_qa_json(path, frames_root, image_size=8)
    assert "qa.json" in str(info.value)


def test_load_video_qa_json_mixed_answers(tmp_path, frames_root):
    path = _write_json(
        tmp_path / "qa.json",
        [
            {"video": "clipA", "question": "Q?", "answer": ["a", "b"]},
            {"video": "clipA", "question": "Q?", "answer": "a"},
        ],
    )
    with pytest.raises(ValueError, match="record 1.*for all or none"):
        datasets.load_video_qa_json(path, frames_root, image_size=8)


def test_load_video_qa_json_frame_errors(tmp_path, frames_root):
    empty = os.path.join(frames_root, "empty")
    os.makedirs(empty)
    with open(os.path.join(empty, "readme.txt"), "w") as f:
        f.write("no frames here")
    broken = os.path.join(frames_root, "broken")
    _write_frames(broken, 2)
    with open(os.path.join(broken, "frame_2.png"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(64))
    for video, message in (
        ("missing", "record 0 \\(video 'missing'\\): frame folder not found"),
        ("empty", "record 0 \\(video 'empty'\\).*holds no frame images"),
        (
            "broken",
            "record 0 \\(video 'broken'\\): could not read the frame "
            "image .*frame_2.png",
        ),
    ):
        path = _write_json(
            tmp_path / "qa.json",
            [{"video": video, "question": "Q?", "answer": "a"}],
        )
        with pytest.raises(ValueError, match=message):
            datasets.load_video_qa_json(
                path, frames_root, num_frames=3, image_size=8
            )


def test_load_video_qa_json_argument_errors(tmp_path, frames_root):
    path = _write_json(
        tmp_path / "qa.json",
        [{"video": "clipA", "question": "Q?", "answer": "a"}],
    )
    for kwargs, message in (
        ({"num_frames": 0}, "`num_frames`"),
        ({"image_size": 2.0}, "`image_size`"),
        ({"max_examples": 0}, "`max_examples`"),
        ({"prompt_template": "answer en {question}"}, "`prompt_template`"),
        ({"prompt_template": "answer en\n"}, "`prompt_template`"),
        ({"video_template": "clipA"}, "`video_template`"),
    ):
        with pytest.raises(ValueError, match=message):
            datasets.load_video_qa_json(path, frames_root, **kwargs)


# --- load_video_files ----------------------------------------------------


@pytest.fixture
def videos_root(tmp_path):
    pytest.importorskip("av")
    root = tmp_path / "videos"
    root.mkdir()
    _write_video(root / "clip_h264.mp4", CLIP_FRAMES, "h264")
    _write_video(root / "clip_mpeg4.avi", CLIP_FRAMES, "mpeg4")
    # WebM keeps no frame count in its header: the loader counts frames.
    _write_video(root / "clip_vp8.webm", CLIP_FRAMES, "libvpx")
    _write_video(root / "short.mp4", 3, "mpeg4")
    return str(root)


@pytest.mark.parametrize(
    "video", ["clip_h264.mp4", "clip_mpeg4.avi", "clip_vp8.webm"]
)
def test_load_video_files_samples_frames(tmp_path, videos_root, video):
    path = _write_json(
        tmp_path / "qa.json",
        [{"video": video, "question": "What happens?", "answer": "It Moves"}],
    )
    split = datasets.load_video_files(
        path, videos_root, num_frames=4, image_size=16
    )
    assert split["images"].shape == (1, 4, 16, 16, 3)
    assert split["images"].dtype == np.uint8
    np.testing.assert_array_equal(
        _colour_indices(split["images"][0]), [1, 4, 7, 10]
    )
    assert list(split["prompts"]) == ["answer en What happens?\n"]
    assert list(split["responses"]) == ["it moves"]
    split = datasets.load_video_files(path, videos_root, image_size=8)
    assert split["images"].shape == (1, 8, 8, 8, 3)
    np.testing.assert_array_equal(
        _colour_indices(split["images"][0]),
        datasets.sample_frame_indices(CLIP_FRAMES, 8),
    )


def test_load_video_files_records(tmp_path, videos_root):
    path = _write_json(
        tmp_path / "qa.json",
        [
            # Names without extension, as MSVD-QA's "video_name"s.
            {"video_name": "short", "question": "Q1?", "answer": ["a", "b"]},
            {"video_id": "clip_h264", "question": "Q2?", "answer": ["c"]},
            {"video": "short.mp4", "question": "Q3?", "answer": ["b", "b"]},
            {"video": "short", "question": "Q4?", "answer": ["d"]},
        ],
    )
    split = datasets.load_video_files(
        path, videos_root, num_frames=6, image_size=8, max_examples=3
    )
    assert split["images"].shape == (3, 6, 8, 8, 3)
    # A clip shorter than `num_frames` repeats its frames in place.
    np.testing.assert_array_equal(
        _colour_indices(split["images"][0]), [0, 0, 1, 1, 2, 2]
    )
    np.testing.assert_array_equal(
        _colour_indices(split["images"][1]), [1, 3, 5, 7, 9, 11]
    )
    np.testing.assert_array_equal(split["images"][2], split["images"][0])
    assert list(split["prompts"]) == [
        "answer en Q1?\n",
        "answer en Q2?\n",
        "answer en Q3?\n",
    ]
    assert list(split["responses"]) == ["a", "c", "b"]
    assert list(split["answers"]) == [["a", "b"], ["c"], ["b", "b"]]


def test_load_video_files_header_over_count(videos_root):
    import av

    path = os.path.join(videos_root, "clip_mpeg4.avi")
    # A header claiming 20 frames: the pass stops short and reports the
    # true count, which the loader then samples from.
    clip, decoded = video_loaders._decode_video(av, path, 4, 8, "", total=20)
    assert clip is None and decoded == CLIP_FRAMES
    clip, decoded = video_loaders._decode_video(av, path, 4, 8, "", total=12)
    np.testing.assert_array_equal(_colour_indices(clip), [1, 4, 7, 10])


def test_load_video_files_errors(tmp_path, videos_root):
    import av

    corrupt = os.path.join(videos_root, "corrupt.mp4")
    with open(corrupt, "wb") as f:
        f.write(np.random.default_rng(0).bytes(2048))
    with open(os.path.join(videos_root, "empty.avi"), "wb") as f:
        pass
    with av.open(os.path.join(videos_root, "sound.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    for video, message in (
        ("corrupt.mp4", "record 0 .*could not decode the video .*corrupt.mp4"),
        ("empty.avi", "could not decode the video file .*empty.avi"),
        ("missing", "record 0 \\(video 'missing'\\): video file not found"),
        ("sound.wav", "record 0 .*sound.wav has no video stream"),
    ):
        path = _write_json(
            tmp_path / "qa.json",
            [{"video": video, "question": "Q?", "answer": "a"}],
        )
        with pytest.raises(ValueError, match=message):
            datasets.load_video_files(path, videos_root, image_size=8)
    with pytest.raises(ValueError, match="Videos folder not found"):
        datasets.load_video_files(path, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="JSON file not found"):
        datasets.load_video_files(tmp_path / "missing.json", videos_root)
    path = _write_json(
        tmp_path / "qa.json", [{"video": "short", "question": "Q?"}]
    )
    with pytest.raises(ValueError, match="record 0 has no 'answer'"):
        datasets.load_video_files(path, videos_root)


def test_load_video_files_without_pyav(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` fails.
    path = _write_json(
        tmp_path / "qa.json", [{"video": "a", "question": "Q?", "answer": "a"}]
    )
    with pytest.raises(ImportError, match="pip install keras-pam\\[video\\]"):
        datasets.load_video_files(path, tmp_path)


# --- Docstring examples run as written -------------------------------------


@pytest.mark.parametrize(
    "name", ["sample_frame_indices", "load_video_qa_json", "load_video_files"]
)
def test_docstring_example_runs(name):
    if name == "load_video_files":
        pytest.importorskip("av")
    doc = getattr(video_loaders, name).__doc__
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert blocks, f"{name} has no Example block"
    for block in blocks:
        lines = block.splitlines()
        indent = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
        # Trusted source: the examples in this package's own docstrings.
        exec("\n".join(ln[indent:] for ln in lines), {})  # noqa: S102
