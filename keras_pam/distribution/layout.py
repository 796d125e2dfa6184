"""Sharding PaliGemma and its LoRA factors with `keras.distribution`.

Keras's own distribution engine (JAX backend) places every variable by its
path: `keras.distribution.DataParallel` replicates the weights and splits
the batch, `keras.distribution.ModelParallel` shards the weights by a
`LayoutMap`. `pali_gemma_layout_map` is that map for KerasHub's PaliGemma
with LoRA: each kernel is split along one of its large dimensions, and each
LoRA factor is split along the dimension it shares with its kernel, so that
`A B` is sharded exactly like the kernel it updates.

The learner keeps adapter states of sharded variables on their devices
(`AdapterState.from_model`, `assign_to`, the `average` merge and the sign
alignment never gather them on one device or the host); see
`is_distributed`.
"""

import keras

# Where a kernel is split ("in": its input dimension, "out": its output
# dimension). Column-parallel projections split the output, the projections
# that follow them split the input, as Megatron does, so that a block needs
# one all-reduce per pair.
_SPLIT_OUTPUT = "out"
_SPLIT_INPUT = "in"

# (path regex of the layer, kernel rank, split). Gemma's attention kernels
# are `(heads, hidden, head_dim)` and `(heads, head_dim, hidden)`; they are
# split along `head_dim`, not the heads, because PaliGemma's Gemma has a
# single key/value head, which cannot be split.
_DECODER = r"decoder_block_\d+/"
_ENCODER = r"image_encoder/encoder_block_\d+/"
_SIGLIP_ATTENTION = _ENCODER + r"multi_head_attention/"
_PALI_GEMMA_KERNELS = (
    (_DECODER + r"attention/(query|key|value)", 3, _SPLIT_OUTPUT),
    (_DECODER + r"attention/attention_output", 3, _SPLIT_INPUT),
    (_DECODER + r"(ffw_gating|ffw_gating_2)", 2, _SPLIT_OUTPUT),
    (_DECODER + r"ffw_linear", 2, _SPLIT_INPUT),
    (_SIGLIP_ATTENTION + r"(query|key|value)_proj", 2, _SPLIT_OUTPUT),
    (_SIGLIP_ATTENTION + r"out_proj", 2, _SPLIT_INPUT),
    (_ENCODER + r"mlp_dense_1", 2, _SPLIT_OUTPUT),
    (_ENCODER + r"mlp_dense_2", 2, _SPLIT_INPUT),
    (r"image_classifier", 2, _SPLIT_OUTPUT),
)


def _axes(rank, index, model_dim):
    axes = [None] * rank
    axes[index] = model_dim
    return tuple(axes)


def pali_gemma_layout_map(device_mesh, model_dim="model"):
    """A `keras.distribution.LayoutMap` for PaliGemma and its LoRA factors.

    The weights are split along the mesh axis `model_dim` (tensor
    parallelism) and replicated along the other axes, which carry the batch
    under `keras.distribution.ModelParallel`:

    - the token embedding `(vocabulary, hidden)` along `hidden`;
    - the Gemma decoder's query, key and value kernels
      `(heads, hidden, head_dim)` along `head_dim`, the attention output
      kernel `(heads, head_dim, hidden)` along `head_dim`, the gating
      kernels `(hidden, intermediate)` and the `ffw_linear` kernel
      `(intermediate, hidden)` along `intermediate`;
    - the SigLIP tower's query, key, value and first MLP kernels along
      their output, its attention output and second MLP kernels along their
      input, and the image-to-text projection along its output;
    - every `lora_kernel_a` `(..., r)` like its kernel's input dimensions,
      every `lora_kernel_b` `(r, out)` like its kernel's output dimension, so
      that the update `A B` is laid out as the kernel is. A factor whose
      shared dimension is not split is replicated.

    Norms, biases, the SigLIP patch and position embeddings stay replicated
    (they are small). Every split dimension must be divisible by the size of
    the `model_dim` axis.

    Args:
        device_mesh: `keras.distribution.DeviceMesh`. The mesh; it must have
            an axis named `model_dim`.
        model_dim: str. The mesh axis the weights are split along. Defaults
            to `"model"`.

    Returns:
        A `keras.distribution.LayoutMap`.

    Example:
    ```python
    mesh = keras.distribution.DeviceMesh(
        (2, 4), ["batch", "model"], keras.distribution.list_devices()
    )
    distribution = keras.distribution.ModelParallel(
        layout_map=keras_pam.distribution.pali_gemma_layout_map(mesh),
        batch_dim_name="batch",
    )
    with distribution.scope():
        learner = keras_pam.ContinualLearner.from_preset("pali_gemma_3b_224")
        learner.learn_task(train, name="task", epochs=1)
    ```
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            "`device_mesh` must be a `keras.distribution.DeviceMesh`. "
            f"Received: device_mesh={device_mesh!r}"
        )
    if model_dim not in device_mesh.axis_names:
        raise ValueError(
            f"`model_dim`={model_dim!r} is not an axis of the device mesh, "
            f"whose axes are {list(device_mesh.axis_names)}."
        )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    layout_map["token_embedding/embeddings"] = (None, model_dim)
    for layer, rank, split in _PALI_GEMMA_KERNELS:
        if split == _SPLIT_OUTPUT:
            # The output is the kernel's last dimension, and B's.
            kernel = _axes(rank, rank - 1, model_dim)
            factor_a = None
            factor_b = (None, model_dim)
        else:
            # The input is the dimension before the output (Gemma's
            # attention output kernel is `(heads, head_dim, hidden)` and its
            # `A` is `(heads, head_dim, r)`).
            kernel = _axes(rank, rank - 2, model_dim)
            factor_a = _axes(rank, rank - 2, model_dim)
            factor_b = None
        layout_map[layer + "/kernel"] = kernel
        layout_map[layer + "/lora_kernel_a"] = factor_a or (None,) * rank
        layout_map[layer + "/lora_kernel_b"] = factor_b or (None, None)
    return layout_map


def is_distributed(tensor):
    """Whether `tensor` is a JAX array laid out over several devices.

    Such tensors (the variables of a model built under a
    `keras.distribution` of more than one device) stay on their devices in
    adapter states instead of being gathered to the host.

    Args:
        tensor: any value.

    Returns:
        bool.
    """
    sharding = getattr(tensor, "sharding", None)
    device_set = getattr(sharding, "device_set", None)
    return device_set is not None and len(device_set) > 1


def device_copy(tensor):
    """A copy of a JAX array in new buffers, with the same sharding.

    Keras's JAX trainer donates the buffers of the variables to each
    training step, so a state holding a variable's own array would be
    deleted by the next `fit`: states hold copies.

    Args:
        tensor: `jax.Array`.

    Returns:
        A `jax.Array` equal to `tensor`, laid out as it is.
    """
    import jax

    return jax.device_put(tensor, tensor.sharding, may_alias=False)
