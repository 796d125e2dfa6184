"""Parts of PaliGemma's adapter: which LoRA factors a part names.

PAM may align only some parts of the model (`AlignmentConfig.parts`).
A part is a set of LoRA factors, told apart by their variable paths
(`keras_pam.lora.lora_variables`):

- `"vision"`: the SigLIP image tower's factors (its blocks are
  `encoder_block_<i>`); `"text"`: the Gemma decoder's
  (`decoder_block_<i>`).
- `"attention"`: the query, key, value and output projections of both
  towers; `"feedforward"`: their MLP projections.
- `"early"` and `"late"`: the first and the second half of each tower's
  blocks, counted separately in each tower (with an odd count the middle
  block is early).
- `"all"`: every factor, without looking at the paths.

A comma-separated list of parts is their union: `"vision,attention"` is
the whole image tower and the decoder's attention.
"""

import re

PART_NAMES = (
    "all",
    "vision",
    "text",
    "attention",
    "feedforward",
    "early",
    "late",
)
# The LoRA targets of `keras_pam.lora`, grouped: Gemma's names, then
# SigLIP's.
ATTENTION_TARGETS = (
    "query",
    "key",
    "value",
    "attention_output",
    "query_proj",
    "key_proj",
    "value_proj",
    "out_proj",
)
FEEDFORWARD_TARGETS = (
    "ffw_gating",
    "ffw_gating_2",
    "ffw_linear",
    "mlp_dense_1",
    "mlp_dense_2",
)
# A block's segment of a path, and the tower it belongs to.
_BLOCK = re.compile(r"^(encoder|decoder)_block_(\d+)$")
_TOWERS = {"encoder": "vision", "decoder": "text"}


def parse_parts(parts):
    """The part names of a `parts` setting, in `PART_NAMES` order.

    Args:
        parts: str or list of str. A part name, a comma-separated list of
            them, or a list of them.

    Returns:
        A tuple of distinct names of `PART_NAMES`.

    Raises:
        ValueError: a name is not a part, none is given, or `"all"` is
            given with another part.

    Example:
    ```python
    parse_parts("attention, vision")  # ("vision", "attention")
    ```
    """
    if isinstance(parts, str):
        names = parts.split(",")
    elif isinstance(parts, (list, tuple)) and all(
        isinstance(name, str) for name in parts
    ):
        names = list(parts)
    else:
        raise ValueError(
            "`parts` must be a part name or a comma-separated list of "
            f"them, from {PART_NAMES}. Received: parts={parts!r}"
        )
    names = [name.strip().lower() for name in names if name.strip()]
    if not names:
        raise ValueError(
            f"`parts` names no part. Choose from {PART_NAMES}. "
            f"Received: parts={parts!r}"
        )
    unknown = [name for name in names if name not in PART_NAMES]
    if unknown:
        raise ValueError(
            f"Unknown part {unknown[0]!r} in `parts`. Choose from "
            f"{PART_NAMES}, or a comma-separated list of them. Received: "
            f"parts={parts!r}"
        )
    if "all" in names and len(set(names)) > 1:
        raise ValueError(
            '`parts` gives "all" with other parts; "all" already holds '
            f"every part. Received: parts={parts!r}"
        )
    return tuple(name for name in PART_NAMES if name in names)


def canonical_parts(parts):
    """A `parts` setting as one string, its names in `PART_NAMES` order
    (`"attention,vision"` is `"vision,attention"`); validated as
    `parse_parts` validates it."""
    return ",".join(parse_parts(parts))


def describe_factor(path):
    """The tower, block index and projection kind of a LoRA factor.

    Args:
        path: str. The factor's variable path, e.g.
            `"decoder_block_3/attention/query/lora_kernel_a"`.

    Returns:
        A tuple `(tower, block, kind)`: `"vision"` or `"text"`, the
        block's index in its tower, and `"attention"` or `"feedforward"`.

    Raises:
        ValueError: the path names no block of either tower, or its
            layer is neither an attention nor a feed-forward projection.
    """
    segments = path.split("/")
    blocks = [_BLOCK.match(segment) for segment in segments]
    blocks = [match for match in blocks if match]
    layer = segments[-2] if len(segments) > 1 else None
    if layer in ATTENTION_TARGETS:
        kind = "attention"
    elif layer in FEEDFORWARD_TARGETS:
        kind = "feedforward"
    else:
        kind = None
    if len(blocks) != 1 or kind is None:
        raise ValueError(
            f"Cannot tell which part of the model the LoRA factor {path!r} "
            "belongs to: a part needs a path through one "
            "`encoder_block_<i>` (image tower) or `decoder_block_<i>` "
            "(decoder) and a layer among the attention projections "
            f"{ATTENTION_TARGETS} or the feed-forward ones "
            f"{FEEDFORWARD_TARGETS}. Align `parts='all'` on this model."
        )
    tower = _TOWERS[blocks[0].group(1)]
    return tower, int(blocks[0].group(2)), kind


def in_parts(paths, parts):
    """Whether each LoRA factor belongs to `parts`.

    Args:
        paths: list of str. Every LoRA factor's path of one model: the
            halves of `"early"` and `"late"` are counted over the blocks
            these paths reach.
        parts: str or list of str. As `parse_parts` takes them.

    Returns:
        A list of bool, one per path. With `"all"` every path is in,
        unread.

    Raises:
        ValueError: `parts` is not valid, a path is not a factor of a
            part (`describe_factor`) while `parts` is not `"all"`, or
            `parts` holds none of the paths.

    Example:
    ```python
    in_parts(
        [
            "image_encoder/encoder_block_0/mlp_dense_1/lora_kernel_a",
            "decoder_block_0/attention/query/lora_kernel_a",
        ],
        "vision",
    )  # [True, False]
    ```
    """
    names = parse_parts(parts)
    paths = list(paths)
    if names == ("all",):
        return [True] * len(paths)
    described = [describe_factor(path) for path in paths]
    num_blocks = {}
    for tower, block, _ in described:
        num_blocks[tower] = max(num_blocks.get(tower, 0), block + 1)
    selected = []
    for tower, block, kind in described:
        half = "early" if 2 * block < num_blocks[tower] else "late"
        selected.append(bool({tower, kind, half} & set(names)))
    if paths and not any(selected):
        raise ValueError(
            f"`parts`={canonical_parts(names)!r} holds none of the model's "
            f"LoRA factors (its towers have {num_blocks} blocks): nothing "
            "would be aligned. Choose parts the model adapts."
        )
    return selected


def part_paths(paths, parts):
    """The paths of `paths` that belong to `parts`, in order (see
    `in_parts`)."""
    paths = list(paths)
    return [path for path, keep in zip(paths, in_parts(paths, parts)) if keep]
