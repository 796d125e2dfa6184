"""Loaders that turn local video question-answering data into splits.

A video split is a split (see `keras_pam.datasets.split_format`) whose
`"images"` are uint8 clips of shape `(N, F, S, S, 3)`: `F` frames per
example, sampled evenly over each video with `sample_frame_indices`. Two
layouts of the usual JSON list of questions (MSVD-QA, MSRVTT-QA) are read:

- `load_video_qa_json`: the videos as folders of pre-extracted frames;
- `load_video_files`: the video files themselves, decoded with PyAV
  (`pip install keras-pam[video]` or `pip install av`).

Nothing here downloads anything.
"""

import os
import re

import numpy as np
from PIL import Image

from keras_pam.datasets.records import _answer_list
from keras_pam.datasets.records import _clean_text
from keras_pam.datasets.records import _most_common
from keras_pam.datasets.records import _read_json
from keras_pam.datasets.records import _resize_rgb
from keras_pam.datasets.records import _to_split

# PaliGemma's MSVD-QA transfer (big_vision's
# `configs/proj/paligemma/transfers/msvd_qa.py`) feeds 8 frames per video;
# its MSRVTT-QA transfer feeds 16.
DEFAULT_NUM_FRAMES = 8

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".webm",
    ".mkv",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".gif",
)
VIDEO_KEYS = ("video", "video_id", "video_name")


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"`{name}` must be a positive int; received "
            f"{type(value).__name__}: {value!r}."
        )
    if value < 1:
        raise ValueError(f"`{name}` must be a positive int; received {value}.")
    return int(value)


def sample_frame_indices(num_frames_in_clip, num_frames):
    """Indices of `num_frames` frames spread evenly over a clip.

    The clip is cut into `num_frames` segments of equal length and the
    frame at the centre of each segment is taken: frame
    `floor((2 * i + 1) * num_frames_in_clip / (2 * num_frames))` for
    segment `i`, computed exactly in integers. The indices never decrease,
    so the frames stay in temporal order, and the first and last frames
    are not favoured.

    A clip shorter than `num_frames` (and, more generally, any clip when
    segments are shorter than one frame) repeats frames: each frame is
    repeated in place, about `num_frames / num_frames_in_clip` times, e.g.
    `[0, 0, 0, 1, 1, 2, 2, 2]` for 3 frames and `num_frames=8`. This keeps
    the order of time, unlike big_vision's `video_replicate_img`, which
    tiles the whole short clip (`[0, 1, 2, 0, 1, 2, 0, 1]`).

    Args:
        num_frames_in_clip: int. The number of frames of the clip, at least
            1.
        num_frames: int. The number of frames to sample, at least 1.

    Returns:
        An int64 numpy array of shape `(num_frames,)` of indices in
        `[0, num_frames_in_clip)`.

    Raises:
        ValueError: if either argument is not an int (bools included) or
            is smaller than 1.

    Example:

    ```python
    from keras_pam.datasets import sample_frame_indices

    print(sample_frame_indices(12, 4))  # [ 1  4  7 10]
    print(sample_frame_indices(3, 8))  # [0 0 0 1 1 2 2 2]
    ```
    """
    total = _check_count(num_frames_in_clip, "num_frames_in_clip")
    count = _check_count(num_frames, "num_frames")
    segments = 2 * np.arange(count, dtype=np.int64) + 1
    return (segments * total) // (2 * count)


def _natural_key(name):
    """Sorts digit runs as numbers: `frame_2.jpg` before `frame_10.jpg`."""
    return [
        (0, int(part), part) if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", name)
    ]


def _frame_files(folder):
    """The image files of `folder`, sorted by name (digits as numbers)."""
    names = [
        name
        for name in os.listdir(folder)
        if name.lower().endswith(FRAME_EXTENSIONS)
        and os.path.isfile(os.path.join(folder, name))
    ]
    return sorted(names, key=_natural_key)


def _read_frame(path, image_size, where):
    try:
        with Image.open(path) as image:
            return _resize_rgb(image, image_size)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(
            f"{where}: could not read the frame image {path}: {error}"
        ) from error


def _read_frame_folder(folder, num_frames, image_size, where):
    if not os.path.isdir(folder):
        raise ValueError(f"{where}: frame folder not found: {folder}")
    names = _frame_files(folder)
    if not names:
        raise ValueError(
            f"{where}: the frame folder {folder} holds no frame images "
            f"(files ending with {', '.join(FRAME_EXTENSIONS)})."
        )
    indices = sample_frame_indices(len(names), num_frames)
    frames = {}
    for index in indices:
        if index not in frames:  # A short clip repeats frames.
            frames[index] = _read_frame(
                os.path.join(folder, names[index]), image_size, where
            )
    return np.stack([frames[index] for index in indices])


def _decode_video(av, path, num_frames, image_size, where, total=None):
    """One pass over the frames of `path`'s first video stream.

    Returns `(clip, decoded)`: the sampled clip, or `None` when the number
    of frames is not known yet, and how many frames were decoded. The
    frame count is `total` when given, else the container's header count;
    without either, the pass decodes every frame to count them. Only the
    sampled frames are converted and kept, and the pass stops after the
    last of them.
    """
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(
                f"{where}: the video file {path} has no video stream."
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total = total or stream.frames
        if not total:
            return None, sum(1 for _ in container.decode(stream))
        indices = sample_frame_indices(total, num_frames)
        wanted = set(indices.tolist())
        last = int(indices[-1])
        frames = {}
        decoded = 0
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in wanted:
                frames[index] = _resize_rgb(frame.to_image(), image_size)
            if index >= last:
                break
    if decoded <= last:
        # The header over-counts the frames: `decoded` is the true count.
        return None, decoded
    return np.stack([frames[index] for index in indices]), decoded


def _read_video(av, path, num_frames, image_size, where):
    if not os.path.isfile(path):
        raise ValueError(f"{where}: video file not found: {path}")
    try:
        clip, decoded = _decode_video(av, path, num_frames, image_size, where)
        if clip is None and decoded:
            clip, decoded = _decode_video(
                av, path, num_frames, image_size, where, total=decoded
            )
    except av.error.FFmpegError as error:
        raise ValueError(
            f"{where}: could not decode the video file {path}: {error}"
        ) from error
    if clip is None:
        raise ValueError(
            f"{where}: the video file {path} has no decodable frames."
        )
    return clip


def _find_video_file(videos_root, name):
    """`videos_root/name`, or `name` with a video extension appended."""
    path = os.path.join(videos_root, name)
    if os.path.isfile(path):
        return path
    for extension in VIDEO_EXTENSIONS:
        for candidate in (extension, extension.upper()):
            if os.path.isfile(path + candidate):
                return path + candidate
    return path


def _record_fields(record, index, where):
    """`(video, question, answer, answers or None)` of one record."""
    if not isinstance(record, dict):
        raise ValueError(
            f"{where}: record {index} must be a dict; got "
            f"{type(record).__name__}: {str(record)[:60]}."
        )
    keys = sorted(record)
    video = next(
        (record[key] for key in VIDEO_KEYS if record.get(key) is not None),
        None,
    )
    if video is None or (isinstance(video, str) and not video.strip()):
        raise ValueError(
            f"{where}: record {index} has no video (one of "
            f"{', '.join(repr(key) for key in VIDEO_KEYS)}; keys: {keys})."
        )
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            f"{where}: record {index} has no 'question' str (keys: {keys})."
        )
    raw = record.get("answer")
    answers = None
    if "answers" in record:
        answers = _answer_list(record["answers"], f"{where}: record {index}")
    if isinstance(raw, (list, tuple)):
        answers = _answer_list(raw, f"{where}: record {index}")
        raw = None
    if raw is not None and not isinstance(raw, (str, int, float)):
        raise ValueError(
            f"{where}: record {index}: 'answer' must be a str or a list of "
            f"str; got {raw!r}."
        )
    if raw is None and answers is None:
        raise ValueError(
            f"{where}: record {index} has no 'answer' (keys: {keys})."
        )
    answer = _most_common(answers) if raw is None else str(raw).strip()
    if not answer:
        raise ValueError(f"{where}: record {index} has an empty 'answer'.")
    return str(video).strip(), question, answer.lower(), answers


def _check_template(template, name):
    if (
        not isinstance(template, str)
        or "{question}" not in template
        or not template.endswith("\n")
    ):
        raise ValueError(
            f"`{name}` must be a str with a '{{question}}' field that ends "
            f"with '\\n'; received {template!r}."
        )


def _load_video_split(
    json_path,
    read_clip,
    max_examples,
    prompt_template,
    video_template,
):
    """The loop shared by the loaders: `read_clip(video, where)` reads the
    clip of a record's (templated) video name."""
    _check_template(prompt_template, "prompt_template")
    if not isinstance(video_template, str) or "{video}" not in video_template:
        raise ValueError(
            "`video_template` must be a str with a '{video}' field; "
            f"received {video_template!r}."
        )
    if max_examples is not None:
        max_examples = _check_count(max_examples, "max_examples")
    json_path = os.fspath(json_path)
    records = _read_json(json_path, "JSON file")
    if not isinstance(records, list) or not records:
        raise ValueError(
            f"{json_path} must hold a non-empty JSON list of records, "
            f"got {type(records).__name__} {str(records)[:40]}."
        )
    clips = {}
    images, prompts, responses, answers = [], [], [], []
    for index, record in enumerate(records):
        if max_examples is not None and len(prompts) >= max_examples:
            break
        video, question, answer, items = _record_fields(
            record, index, json_path
        )
        if prompts and (items is None) != (answers[-1] is None):
            raise ValueError(
                f"{json_path}: record {index}: the annotators' answers are "
                "given for some records of the file and not for others; "
                "give them for all or none."
            )
        name = video_template.replace("{video}", video)
        if name not in clips:
            where = f"{json_path}: record {index} (video {video!r})"
            clips[name] = read_clip(name, where)
        images.append(clips[name])
        prompts.append(
            prompt_template.replace("{question}", _clean_text(question))
        )
        responses.append(answer)
        answers.append(items)
    return _to_split(
        images,
        prompts,
        responses,
        answers=None if answers[0] is None else answers,
    )


def load_video_qa_json(
    json_path,
    frames_root,
    num_frames=DEFAULT_NUM_FRAMES,
    image_size=224,
    max_examples=None,
    prompt_template="answer en {question}\n",
    video_template="{video}",
):
    """Loads a video QA JSON file with pre-extracted frames into a split.

    The JSON file holds a list of records, one question each, as MSVD-QA
    and MSRVTT-QA are commonly distributed: `{"video": ..., "question":
    str, "answer": ...}`. The video is read from the first of the keys
    `"video"`, `"video_id"` and `"video_name"` that is present (a str or
    an int, made a str), passed through `video_template` to give the
    folder `frames_root/<name>/` of the video's frames: image files (jpg,
    jpeg, png, bmp, webp; other files are ignored) sorted by name, runs of
    digits compared as numbers (`frame_2.jpg` before `frame_10.jpg`).
    `num_frames` frames are sampled evenly over them with
    `sample_frame_indices` (a video with fewer frames repeats some), and
    only those are read, converted to RGB and resized to `image_size` x
    `image_size` (bilinear, aspect ratio not kept, as `load_llava_json`
    does). Each video is read once, however many questions it has, but
    every example holds its own copy of its clip, as the split format
    asks: `num_frames * image_size**2 * 3` bytes (1.2 MB at the defaults),
    so bound large files with `max_examples`.

    The prompt is `prompt_template` with `{question}` replaced by the
    question, its whitespace (newlines included) folded into single
    spaces. The `"answer"` is a str (numbers are made str), or a list of
    the annotators' answers: the list (str or `{"answer": str}` dicts) then
    fills `"answers"` and the response is its most common answer (ties to
    the first seen). A record may also give the annotators' answers as
    `"answers"`, next to a str `"answer"`. Responses and answers are
    stripped and lower-cased.

    The default of 8 frames is that of PaliGemma's MSVD-QA transfer
    (big_vision's `configs/proj/paligemma/transfers/msvd_qa.py`,
    `num_frames=8`); its MSRVTT-QA transfer uses 16. Each frame costs
    `(image_size / 14) ** 2` image tokens (256 at 224), so 8 frames already
    make 2048 image tokens per example.

    Args:
        json_path: str. Path of the JSON file.
        frames_root: str. The folder holding one frame folder per video.
        num_frames: int. Frames per clip. Defaults to `8`.
        image_size: int. Output frame side. Defaults to `224`.
        max_examples: int, optional. Stop after this many examples
            (questions). Defaults to `None` (all).
        prompt_template: str. The prompt, with a `{question}` field; must
            end with `"\\n"`. Defaults to `"answer en {question}\\n"`.
        video_template: str. The frame folder's name relative to
            `frames_root`, with a `{video}` field for the record's video,
            e.g. `"video{video}"` for MSRVTT-QA's int `"video_id"`s.
            Defaults to `"{video}"`.

    Returns:
        A split dict with `"images"` (uint8, `(N, num_frames, image_size,
        image_size, 3)`), `"prompts"`, `"responses"` and, when the records
        give lists of annotators' answers, `"answers"` (a non-empty list of
        str per example).

    Raises:
        ValueError: if the JSON file is missing, not valid JSON or not a
            non-empty list, a record has no video, question or answer or
            malformed answers, the annotators' answers are given for only
            some records, a frame folder is missing or holds no frame
            image, a frame image cannot be read, or an argument is
            invalid.

    Example:

    ```python
    import json, os, tempfile
    from PIL import Image
    from keras_pam.datasets import load_video_qa_json

    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "frames", "clip0"))
    for i, color in enumerate(["red", "green", "blue", "white"]):
        Image.new("RGB", (40, 30), color).save(
            os.path.join(root, "frames", "clip0", f"{i:05d}.png")
        )
    records = [
        {"video": "clip0", "question": "What is shown?", "answer": "Colors"},
        {"video_id": "clip0", "question": "Is it bright?",
         "answer": ["yes", "Yes", "no"]},
    ]
    path = os.path.join(root, "qa.json")
    with open(path, "w") as f:
        json.dump(records, f)
    split = load_video_qa_json(
        path, os.path.join(root, "frames"), num_frames=2, image_size=16,
        max_examples=1,
    )
    print(split["images"].shape)  # (1, 2, 16, 16, 3)
    print(split["prompts"][0], split["responses"][0])
    ```
    """
    num_frames = _check_count(num_frames, "num_frames")
    image_size = _check_count(image_size, "image_size")
    frames_root = os.fspath(frames_root)
    if not os.path.isdir(frames_root):
        raise ValueError(f"Frames folder not found: {frames_root}")

    def read_clip(name, where):
        return _read_frame_folder(
            os.path.join(frames_root, name), num_frames, image_size, where
        )

    return _load_video_split(
        json_path, read_clip, max_examples, prompt_template, video_template
    )


def _import_av():
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "`load_video_files` decodes videos with PyAV, which is not "
            "installed. Install it with `pip install keras-pam[video]` or "
            "`pip install av` (its wheels bundle FFmpeg)."
        ) from error
    return av


def load_video_files(
    json_path,
    videos_root,
    num_frames=DEFAULT_NUM_FRAMES,
    image_size=224,
    max_examples=None,
    prompt_template="answer en {question}\n",
    video_template="{video}",
):
    """Loads a video QA JSON file with video files into a split.

    The same JSON list of questions as `load_video_qa_json` (see there for
    the records, prompts, responses and answers), with each record's video
    (through `video_template`) naming a video file under `videos_root`:
    the path as given or, when that is no file, the path with a video
    extension appended (`.mp4`, `.avi`, `.webm`, `.mkv`, `.mov`, `.m4v`,
    `.mpg`, `.mpeg`, `.gif`, lower or upper case), so that both
    `"video": "clip0.avi"` and `"video_name": "clip0"` work.

    Videos are decoded with PyAV (its wheels bundle FFmpeg; install with
    `pip install keras-pam[video]` or `pip install av`), lazily: the
    frames of the first video stream are decoded in order and only the
    `num_frames` frames chosen by `sample_frame_indices` are converted
    and resized (as `load_video_qa_json` does), decoding stopping after
    the last of them. The frame count comes from the container's header;
    a container without one (e.g. WebM) is decoded once more to count the
    frames, and so is one whose header over-counts them (e.g. a truncated
    file). Each video is decoded once, however many questions it has. A
    file that FFmpeg cannot open or decode raises a `ValueError`; frames
    that FFmpeg itself drops as damaged (it may, with threaded decoding)
    are not counted.

    Args:
        json_path: str. Path of the JSON file.
        videos_root: str. The folder the video files are in.
        num_frames: int. Frames per clip. Defaults to `8`, PaliGemma's
            MSVD-QA transfer's (see `load_video_qa_json`).
        image_size: int. Output frame side. Defaults to `224`.
        max_examples: int, optional. Stop after this many examples
            (questions). Defaults to `None` (all).
        prompt_template: str. The prompt, with a `{question}` field; must
            end with `"\\n"`. Defaults to `"answer en {question}\\n"`.
        video_template: str. The video file's name relative to
            `videos_root`, with a `{video}` field for the record's video,
            e.g. `"video{video}.mp4"` for MSRVTT-QA's int `"video_id"`s.
            Defaults to `"{video}"`.

    Returns:
        A split dict with `"images"` (uint8, `(N, num_frames, image_size,
        image_size, 3)`), `"prompts"`, `"responses"` and, when the records
        give lists of annotators' answers, `"answers"`.

    Raises:
        ImportError: if PyAV is not installed.
        ValueError: if the JSON file is missing, not valid JSON or not a
            non-empty list, a record has no video, question or answer or
            malformed answers, the annotators' answers are given for only
            some records, a video file is missing, cannot be decoded, has
            no video stream or no frames, or an argument is invalid.

    Example:

    ```python
    import json, os, tempfile
    import av
    import numpy as np
    from keras_pam.datasets import load_video_files

    root = tempfile.mkdtemp()
    with av.open(os.path.join(root, "clip0.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for value in range(0, 240, 20):  # 12 ever brighter frames.
            frame = av.VideoFrame.from_ndarray(
                np.full((32, 32, 3), value, "uint8"), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    records = [{"video_name": "clip0", "question": "What happens?",
                "answer": "it gets brighter"}]
    path = os.path.join(root, "qa.json")
    with open(path, "w") as f:
        json.dump(records, f)
    split = load_video_files(path, root, num_frames=4, image_size=16)
    print(split["images"].shape)  # (1, 4, 16, 16, 3)
    print(split["images"][0, :, 0, 0, 0])  # About [20 80 140 200].
    ```
    """
    num_frames = _check_count(num_frames, "num_frames")
    image_size = _check_count(image_size, "image_size")
    av = _import_av()
    videos_root = os.fspath(videos_root)
    if not os.path.isdir(videos_root):
        raise ValueError(f"Videos folder not found: {videos_root}")

    def read_clip(name, where):
        path = _find_video_file(videos_root, name)
        return _read_video(av, path, num_frames, image_size, where)

    return _load_video_split(
        json_path, read_clip, max_examples, prompt_template, video_template
    )
