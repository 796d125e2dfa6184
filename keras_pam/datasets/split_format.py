"""Input checking and conversion for the PaliGemma dict format.

A split is a dict with `images` (uint8 or float, `(N, S, S, 3)`, or video
clips of `F` frames `(N, F, S, S, 3)`), `prompts` and `responses` (str), and
optionally `answers` (a list of reference answers per example, for VQA soft
accuracy). It may come as numpy arrays, a
`tf.data.Dataset` (batched or not) or a generator of examples or batches.
`as_examples` reads any of them into memory; `as_split`, which the learner
uses, streams a `tf.data.Dataset` instead
(`keras_pam.datasets.streaming_split`). A `Task` (`keras_pam.datasets.Task`)
bundles a train and a test split with its metric.
"""

import collections.abc

import numpy as np

REQUIRED_KEYS = ("images", "prompts", "responses")


def _as_str_array(values, key, name):
    array = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(len(array), dtype=object)
    for i, value in enumerate(array):
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if not isinstance(value, str):
            raise ValueError(
                f"`{name}['{key}']` must hold strings; example {i} is "
                f"{type(value).__name__}: {value!r}."
            )
        out[i] = value
    return out


def _as_answer_list(answers, index, name):
    if isinstance(answers, (str, bytes)) or not isinstance(
        answers, collections.abc.Iterable
    ):
        answers = None
    else:
        answers = [
            a.decode("utf-8") if isinstance(a, bytes) else str(a)
            for a in answers
        ]
    if not answers:
        raise ValueError(
            f"`{name}['answers']` must hold a non-empty list of reference "
            f"answers per example; example {index} has none."
        )
    return answers


def _concatenate(batches):
    keys = batches[0].keys()
    merged = {}
    for key in keys:
        parts = [b[key] for b in batches]
        if key == "answers":
            merged[key] = [list(a) for part in parts for a in part]
        elif key == "images" and _uneven_clips(parts):
            # Kept as a list of clips, for `as_examples` to check.
            merged[key] = [np.asarray(c) for p in parts for c in p]
        else:
            merged[key] = np.concatenate([np.asarray(p) for p in parts], 0)
    return merged


def _uneven_clips(parts):
    """Whether batches of video clips differ in frame count or size."""
    parts = [np.asarray(p) for p in parts]
    shapes = {p.shape[1:] for p in parts}
    return len(shapes) > 1 and all(p.ndim == 5 for p in parts)


def _is_batched(row):
    """Whether a row of a dataset or generator is a batch of examples.

    Images `(S, S, 3)` are one example and `(N, S, S, 3)` a batch, unless
    the prompt is a single string: then they are one video clip
    `(F, S, S, 3)`. Clips `(N, F, S, S, 3)` are a batch.
    """
    ndim = np.ndim(row.get("images", np.zeros(3)))
    if ndim == 4:
        return np.ndim(row.get("prompts", ())) != 0
    return ndim == 5


def _materialise(data, name):
    """Any accepted input as one dict of arrays (unchecked)."""
    if isinstance(data, collections.abc.Mapping):
        return dict(data)
    try:
        import tensorflow as tf

        if isinstance(data, tf.data.Dataset):
            rows = list(data.as_numpy_iterator())
            if not rows:
                raise ValueError(f"`{name}` is an empty dataset.")
            if not _is_batched(rows[0]):
                rows = [
                    {k: np.asarray(v)[None] for k, v in r.items()} for r in rows
                ]
            return _concatenate(rows)
    except ImportError:
        pass
    if callable(data):
        data = data()
    if isinstance(data, collections.abc.Iterable) and not isinstance(
        data, (str, bytes)
    ):
        rows = list(data)
        if not rows:
            raise ValueError(f"`{name}` is empty: it yielded no examples.")
        if not all(isinstance(r, collections.abc.Mapping) for r in rows):
            raise ValueError(f"`{name}` must yield dicts of {REQUIRED_KEYS}.")
        if not _is_batched(rows[0]):
            rows = [
                {
                    k: ([v] if k == "answers" else np.asarray(v)[None])
                    for k, v in r.items()
                }
                for r in rows
            ]
        return _concatenate(rows)
    raise ValueError(
        f"`{name}` must be a dict of arrays, a tf.data.Dataset or a "
        f"generator of dicts. Received: {type(data).__name__}."
    )


def _clip_list(images):
    """The clips of a list (or object array) of `(F, S, S, 3)` arrays, or
    `None` if `images` is not one."""
    is_list = isinstance(images, (list, tuple))
    is_objects = (
        isinstance(images, np.ndarray)
        and images.dtype == object
        and images.ndim == 1
    )
    if not (is_list or is_objects) or not len(images):
        return None
    if not all(np.ndim(clip) == 4 for clip in images):
        return None
    return [np.asarray(clip) for clip in images]


def _pad_clip(clip, num_frames):
    """`clip` with its last frame repeated up to `num_frames` frames."""
    missing = num_frames - clip.shape[0]
    if missing <= 0:
        return clip
    return np.concatenate([clip, np.repeat(clip[-1:], missing, axis=0)], 0)


def _stack_clips(clips, num_frames, pad_frames, name):
    """One `(N, F, S, S, 3)` array of a list of clips."""
    frame_shapes = {clip.shape[1:] for clip in clips}
    if len(frame_shapes) > 1:
        first = clips[0].shape[1:]
        other = next(
            i for i, clip in enumerate(clips) if clip.shape[1:] != first
        )
        raise ValueError(
            f"`{name}['images']` holds frames of different shapes: example "
            f"0 has frames of shape {first}, example {other} "
            f"{clips[other].shape[1:]}. Resize every frame to the model's "
            "size."
        )
    counts = [clip.shape[0] for clip in clips]
    if len(set(counts)) > 1:
        if not pad_frames:
            shortest, longest = int(np.argmin(counts)), int(np.argmax(counts))
            raise ValueError(
                f"`{name}['images']` holds clips with uneven frame counts: "
                f"example {shortest} has {counts[shortest]} frames, example "
                f"{longest} {counts[longest]}. Sample the same number of "
                "frames from every clip, or pass `pad_frames=True` to pad "
                "the shorter clips by repeating their last frame."
            )
        target = num_frames if num_frames is not None else max(counts)
        clips = [_pad_clip(clip, target) for clip in clips]
        counts = [clip.shape[0] for clip in clips]
        if len(set(counts)) > 1:
            longest = int(np.argmax(counts))
            raise ValueError(
                f"`{name}['images']` example {longest} has {counts[longest]} "
                f"frames, but the model takes {num_frames}; padding only "
                "adds frames. Sample the frames of the longer clips."
            )
    return np.stack(clips, 0)


def _fit_frames(images, num_frames, pad_frames, image_size, name):
    """`images` with the frame count of the model, or a `ValueError`."""
    if images.ndim == 4:
        if num_frames is None or num_frames == 1:
            return images
        if pad_frames:
            return np.repeat(images[:, None], num_frames, axis=1)
        raise ValueError(
            f"`{name}['images']` are single images {images.shape}, but the "
            f"model takes clips of {num_frames} frames (N, {num_frames}, "
            "size, size, 3). Pass clips, or `pad_frames=True` to repeat "
            f"each image {num_frames} times."
        )
    frames = images.shape[1]
    if num_frames is None:
        if image_size is not None:
            raise ValueError(
                f"`{name}['images']` holds video clips of {frames} frames "
                f"{images.shape}: a video example given to a learner built "
                "without video support. Build its model with "
                "`keras_pam.models.video_pali_gemma` "
                f"(`PaliGemmaVideoCausalLM`, `num_frames={frames}`), or "
                "give single images (N, size, size, 3)."
            )
        return images
    if frames < num_frames and pad_frames:
        return np.stack([_pad_clip(clip, num_frames) for clip in images])
    if frames != num_frames:
        raise ValueError(
            f"`{name}['images']` are clips of {frames} frames, but the "
            f"model takes {num_frames}. Sample {num_frames} frames per clip"
            + (
                ", or pass `pad_frames=True` to repeat the last frame."
                if frames < num_frames
                else "."
            )
        )
    return images


def as_examples(
    data, image_size=None, name="data", num_frames=None, pad_frames=False
):
    """Check a split and return it as a dict of numpy arrays.

    The one check of a split: the learner, the scorer and the data sets'
    `validate_split` all use it. `images` are single images
    `(N, S, S, 3)` or video clips of `F` frames `(N, F, S, S, 3)`; clips
    may also come as a list of `(F, S, S, 3)` arrays, stacked here when
    their frame counts agree (or are padded, see `pad_frames`).

    A model states what it takes with `image_size` and `num_frames`
    (`keras_pam.LoRAModel.example_shape`): an image-only model gives no
    `num_frames`, and clips then raise.

    Args:
        data: dict, `tf.data.Dataset`, `StreamingSplit`, iterable or
            generator function. The split, in the PaliGemma dict format,
            read into memory whole (`as_split` streams a dataset).
        image_size: int. The side every image (every frame) must have.
            Defaults to `None` (any square size, images or clips).
        name: str. How to call `data` in error messages. Defaults to
            `"data"`.
        num_frames: int. The frames per example the model takes (a video
            model's; `1` takes images too). Defaults to `None`: an image
            model, so clips are refused when `image_size` is given.
        pad_frames: bool. Pad clips with fewer frames than the others (or
            than `num_frames`) by repeating their last frame, and, with
            `num_frames`, turn single images into clips of that one image
            repeated. Defaults to `False`: uneven frame counts raise.

    Returns:
        A dict with `images` (numpy), `prompts` and `responses` (object
        arrays of str) and, if given, `answers` (a list of lists of str).

    Example:
    ```python
    split = as_examples({"images": np.zeros((2, 16, 16, 3), "uint8"),
                         "prompts": ["a\\n", "b\\n"],
                         "responses": ["red", "blue"]})
    clips = as_examples({"images": np.zeros((2, 4, 16, 16, 3), "uint8"),
                         "prompts": ["a\\n", "b\\n"],
                         "responses": ["red", "blue"]}, num_frames=4)
    ```
    """
    data = _materialise(data, name)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"`{name}` is missing the key(s) {missing}; a split needs "
            f"{list(REQUIRED_KEYS)}. Received keys: {sorted(data)}."
        )
    clips = _clip_list(data["images"])
    if clips is not None:
        images = _stack_clips(clips, num_frames, pad_frames, name)
    else:
        images = np.asarray(data["images"])
    if images.ndim not in (4, 5) or images.shape[-1] != 3:
        raise ValueError(
            f"`{name}['images']` must have shape (N, size, size, 3), or "
            f"(N, frames, size, size, 3) for video clips; received shape "
            f"{images.shape}."
        )
    if images.dtype.kind not in "uif":
        raise ValueError(
            f"`{name}['images']` must be uint8 or float; received dtype "
            f"{images.dtype}."
        )
    images = _fit_frames(images, num_frames, pad_frames, image_size, name)
    height, width = images.shape[-3:-1]
    what = "" if images.ndim == 4 else " frames"
    if height != width:
        raise ValueError(
            f"`{name}['images']` must be square; received {height}x{width}."
        )
    if image_size is not None and height != image_size:
        raise ValueError(
            f"`{name}['images']`{what} are {height}x{width}, but "
            f"the model takes {image_size}x{image_size}. Resize them (the "
            "loaders in `keras_pam.datasets` take an `image_size`)."
        )
    examples = {
        "images": images,
        "prompts": _as_str_array(data["prompts"], "prompts", name),
        "responses": _as_str_array(data["responses"], "responses", name),
    }
    if "answers" in data:
        examples["answers"] = [
            _as_answer_list(answers, i, name)
            for i, answers in enumerate(data["answers"])
        ]
    sizes = {k: len(v) for k, v in examples.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"`{name}` has keys of different lengths: {sizes}.")
    if sizes["images"] == 0:
        raise ValueError(f"`{name}` is empty: it has no examples.")
    return examples


# Both kinds of split run their epochs back to back with it
# (`keras_pam.datasets.data.training_dataset`,
# `StreamingSplit.training_dataset`), so it lives below both.
def concatenate_epochs(epoch_datasets, initial_epoch, epochs):
    """The datasets of epochs `initial_epoch` to `epochs - 1`, back to
    back; a `ValueError` if there is none."""
    ds = None
    for epoch in epoch_datasets:
        ds = epoch if ds is None else ds.concatenate(epoch)
    if ds is None:
        raise ValueError(
            f"No epoch to run: `initial_epoch`={initial_epoch} and "
            f"`epochs`={epochs}."
        )
    return ds
