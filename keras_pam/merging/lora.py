"""LoRA on PaliGemma: which layers, enabling it, and `AdapterState`."""

import collections.abc
import json
import math
import os

import keras
import numpy as np

from keras_pam.distribution.layout import device_copy
from keras_pam.distribution.layout import is_distributed

# Attention and feed-forward projections of both towers (paper, App. A).
GEMMA_LORA_TARGETS = (
    "query",
    "key",
    "value",
    "attention_output",
    "ffw_gating",
    "ffw_gating_2",
    "ffw_linear",
)
SIGLIP_LORA_TARGETS = (
    "query_proj",
    "key_proj",
    "value_proj",
    "out_proj",
    "mlp_dense_1",
    "mlp_dense_2",
)
PALI_GEMMA_LORA_TARGETS = GEMMA_LORA_TARGETS + SIGLIP_LORA_TARGETS

LORA_FACTOR_NAMES = ("lora_kernel_a", "lora_kernel_b")


def enable_lora(backbone, rank, alpha=None, target_layer_names=None):
    """Enable LoRA on a PaliGemma backbone, leaving only the factors trainable.

    LoRA is enabled through KerasHub's own `backbone.enable_lora`, so the
    adapter files stay loadable by `backbone.load_lora_weights`. KerasHub
    leaves the bias of an adapted layer trainable; here it is frozen, so
    that exactly the LoRA factors train.

    Args:
        backbone: `keras_hub.models.PaliGemmaBackbone`. The backbone to adapt.
        rank: int. The LoRA rank `r`.
        alpha: float. The LoRA scale numerator: the update is
            `(alpha / rank) * A @ B`. Defaults to `None`, which means `rank`
            (Keras's convention, a scale of 1).
        target_layer_names: list of str. Names of the layers to adapt.
            Defaults to `PALI_GEMMA_LORA_TARGETS`: the attention and
            feed-forward projections of the Gemma decoder and the SigLIP
            image tower.

    Returns:
        The list of adapted layers, in KerasHub's `.lora.h5` order.

    Example:
    ```python
    causal_lm = keras_pam.models.build_tiny_pali_gemma()
    layers = keras_pam.lora.enable_lora(causal_lm.backbone, rank=4)
    ```
    """
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"`rank` must be a positive int. Received: {rank!r}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"`alpha` must be positive. Received: {alpha!r}")
    if getattr(backbone, "_lora_enabled_layers", None):
        raise ValueError(
            "LoRA is already enabled on this backbone (rank "
            f"{backbone._lora_rank}). Enable it once, on a fresh backbone."
        )
    if target_layer_names is None:
        target_layer_names = PALI_GEMMA_LORA_TARGETS
    backbone.enable_lora(rank, target_layer_names=list(target_layer_names))
    layers = adapted_layers(backbone)
    if not layers:
        raise ValueError(
            "No layer of the backbone matched `target_layer_names`="
            f"{list(target_layer_names)}."
        )
    for layer in layers:
        layer.lora_alpha = float(alpha if alpha is not None else rank)
    freeze_all_but_lora_factors(backbone)
    return layers


def freeze_all_but_lora_factors(backbone):
    """Freeze every trainable weight of `backbone` but the LoRA factors.

    KerasHub's `enable_lora` freezes the backbone but leaves the layers it
    adapts trainable, so their biases train too. A bias trained that way
    is outside the adapter: no clone, alignment, merge or reset touches
    it, and it carries over from task to task. In keras_pam only the LoRA
    factors train.

    Args:
        backbone: `keras_hub.models.PaliGemmaBackbone`. A LoRA-enabled
            backbone.
    """
    for variable in backbone.trainable_weights:
        if variable.name not in LORA_FACTOR_NAMES:
            variable.trainable = False


def adopt_lora(backbone, rank, alpha=None):
    """Take a backbone that arrives with LoRA enabled, as `enable_lora`
    would leave it.

    LoRA may have been enabled by KerasHub: `backbone.enable_lora`, or
    `backbone.load_lora_weights` on a fresh backbone, which enables it on
    KerasHub's default targets with an `alpha` equal to the rank. The rank
    and `alpha` of every adapted layer are checked against the requested
    ones first, so a mismatch raises and leaves the backbone unchanged.
    Then, as in `enable_lora`, every trainable weight but the LoRA factors
    (the biases of the adapted layers) is frozen.

    Args:
        backbone: `keras_hub.models.PaliGemmaBackbone`. A backbone with LoRA
            enabled.
        rank: int. The LoRA rank the backbone must have.
        alpha: float. The LoRA scale numerator every adapted layer must
            have. Defaults to `None`, which means `rank` (Keras's and
            KerasHub's default).

    Returns:
        The list of adapted layers, in KerasHub's `.lora.h5` order.

    Example:
    ```python
    causal_lm = keras_pam.models.build_tiny_pali_gemma()
    causal_lm.backbone.enable_lora(4)  # KerasHub: biases stay trainable.
    keras_pam.lora.adopt_lora(causal_lm.backbone, rank=4)
    ```
    """
    layers = adapted_layers(backbone)
    if not layers:
        raise ValueError("The backbone has no LoRA to adopt.")
    ranks = {int(layer.lora_rank) for layer in layers}
    if ranks != {rank} or backbone._lora_rank != rank:
        raise ValueError(
            f"`causal_lm` already has LoRA of rank "
            f"{backbone._lora_rank}, not `rank`={rank}."
        )
    requested = float(alpha if alpha is not None else rank)
    alphas = sorted({float(layer.lora_alpha) for layer in layers})
    if alphas != [requested]:
        found = alphas[0] if len(alphas) == 1 else alphas
        raise ValueError(
            f"`causal_lm` already has LoRA with alpha {found}, but the "
            f"requested alpha is {requested} (`alpha`={alpha!r}; `None` "
            f"means the rank, {rank}). KerasHub's `enable_lora` and "
            "`load_lora_weights` set alpha to the rank. Pass "
            "`alpha` equal to the model's, or set `lora_alpha` on every "
            "layer of `keras_pam.lora.adapted_layers(backbone)` first."
        )
    freeze_all_but_lora_factors(backbone)
    return layers


# Keras quantisation modes a frozen base may take under LoRA.
QUANTIZATION_MODES = ("int8",)


def quantization_mode(backbone):
    """The quantisation mode of a backbone's layers, or `None`."""
    modes = {
        getattr(layer, "quantization_mode", None)
        for layer in backbone._flatten_layers(include_self=False)
    }
    modes.discard(None)
    return modes.pop() if len(modes) == 1 else None


def _is_projection(layer):
    return isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))


def quantize_base(backbone, mode="int8"):
    """Quantise the frozen projections of a backbone with Keras's
    quantisation.

    The dense and einsum-dense layers of both towers (attention,
    feed-forward, the image-to-text projection: nearly all the weights
    but the embeddings) get `mode` kernels through
    `backbone.quantize(mode)`; LoRA, enabled afterwards with
    `enable_lora`, trains float32 factors on top of them (Keras's quantised
    layers add `A B` in their forward pass). Quantisation must come first:
    it replaces the kernels that LoRA attaches to. The token embedding
    keeps its dtype: it is also PaliGemma's output layer, and Keras's int8
    reversible embedding quantises its input with a rounding that passes
    no gradient, which would stop every LoRA gradient there. A backbone
    already quantised in `mode` is left as it is.

    Args:
        backbone: `keras_hub.models.PaliGemmaBackbone`. The backbone, without
            LoRA.
        mode: str. One of `QUANTIZATION_MODES`. Defaults to `"int8"`.

    Example:
    ```python
    causal_lm = keras_pam.models.build_tiny_pali_gemma()
    keras_pam.lora.quantize_base(causal_lm.backbone, "int8")
    keras_pam.lora.enable_lora(causal_lm.backbone, rank=4)
    ```
    """
    if mode not in QUANTIZATION_MODES:
        raise ValueError(
            f"`quantize` must be `None` or one of {QUANTIZATION_MODES}. "
            f"Received: quantize={mode!r}"
        )
    if quantization_mode(backbone) == mode:
        return
    if getattr(backbone, "_lora_enabled_layers", None):
        raise ValueError(
            "LoRA is already enabled on this backbone: quantise the base "
            "(`quantize`) before LoRA is enabled, on a fresh backbone."
        )
    backbone.quantize(mode, filters=_is_projection)


def adapted_layers(backbone):
    """The LoRA-enabled layers of a backbone, in KerasHub's file order."""
    indices = getattr(backbone, "_lora_enabled_layers", None) or []
    layers = [
        layer
        for layer in backbone._flatten_layers(include_self=False)
        if layer.weights
    ]
    return [layers[i] for i in indices]


def lora_variables(model):
    """Map variable path to variable for every LoRA factor of `model`."""
    variables = {}
    for variable in model.variables:
        if variable.name in LORA_FACTOR_NAMES:
            if variable.path in variables:
                raise ValueError(
                    f"Two LoRA variables share the path {variable.path!r}."
                )
            variables[variable.path] = variable
    return variables


def _copy_value(tensor):
    """A numpy copy, or a device copy of a tensor sharded over devices."""
    if is_distributed(tensor):
        return device_copy(tensor)
    return np.array(keras.ops.convert_to_numpy(tensor), copy=True)


def _detached(tensor):
    if isinstance(tensor, np.ndarray) and tensor.flags.owndata:
        return tensor
    return _copy_value(tensor)


class AdapterState(collections.abc.Mapping):
    """The values of every LoRA factor of a model, keyed by variable path.

    An `AdapterState` is a read-only mapping from a variable path such as
    `"decoder_block_0/attention/query/lora_kernel_a"` to an array. It is a
    value, not a view: taking one from a model copies the factors, and
    changing the model afterwards leaves it as it was. Alignment and merging
    are functions from states to states.

    Args:
        tensors: mapping of str to array. The factors, keyed by variable path.
            Values may be numpy arrays or backend tensors.

    Example:
    ```python
    state = AdapterState({"layer/lora_kernel_a": np.ones((4, 2))})
    doubled = state.map(lambda x: 2 * x)
    ```
    """

    def __init__(self, tensors):
        self._tensors = dict(tensors)

    @classmethod
    def from_model(cls, model):
        """Copy the LoRA factors of `model` (a layer, model or backbone).

        The copies are numpy arrays, except for variables laid out over
        several devices by a `keras.distribution` (JAX): those are copied on
        their devices and keep their sharding, so that no device or host
        ever holds the whole adapter.
        """
        variables = lora_variables(model)
        if not variables:
            raise ValueError(
                "The model has no LoRA factors. Enable LoRA first, e.g. with "
                "`keras_pam.lora.enable_lora(backbone, rank)`."
            )
        return cls(
            {
                path: _copy_value(variable.value)
                for path, variable in variables.items()
            }
        )

    def __getitem__(self, path):
        return self._tensors[path]

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self):
        return len(self._tensors)

    def __repr__(self):
        return f"AdapterState({len(self)} tensors, {self.num_entries} entries)"

    @property
    def num_entries(self):
        """The number of scalar entries over all tensors."""
        return int(sum(np.prod(np.shape(t)) for t in self._tensors.values()))

    @property
    def rank(self):
        """The LoRA rank: the leading dimension of the `B` factors."""
        ranks = {
            np.shape(t)[0]
            for path, t in self._tensors.items()
            if path.endswith("lora_kernel_b")
        }
        return int(ranks.pop()) if len(ranks) == 1 else None

    def map(self, fn):
        """A new state with `fn` applied to every tensor."""
        return AdapterState({k: fn(v) for k, v in self._tensors.items()})

    def numpy(self):
        """The same state with every tensor as a numpy array."""
        return self.map(lambda t: np.asarray(keras.ops.convert_to_numpy(t)))

    def snapshot(self):
        """The same values, detached from every model and tensor.

        A numpy array that owns its memory is kept as it is: keras_pam never
        changes a state's arrays in place, and a merge returns new ones, so
        copying them would only double the memory. Anything else (a backend
        tensor, a variable, a numpy view that may share memory with one) is
        copied: to a numpy array, or, when laid out over several devices by
        a `keras.distribution`, where it is, with its sharding (`numpy()`
        would gather it on the host).
        """
        return self.map(_detached)

    def check_compatible(self, other, what="state"):
        """Raise a `ValueError` unless `other` has the same paths and shapes.

        Args:
            other: mapping of str to array. The state to compare with.
            what: str. How to name `other` in the error. Defaults to
                `"state"`.
        """
        missing = sorted(set(self) - set(other))
        extra = sorted(set(other) - set(self))
        if missing or extra:
            raise ValueError(
                f"The {what} does not have this adapter's LoRA factors: "
                f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}."
            )
        for path, tensor in self._tensors.items():
            if tuple(np.shape(other[path])) != tuple(np.shape(tensor)):
                raise ValueError(
                    f"The {what} has shape {tuple(np.shape(other[path]))} at "
                    f"{path!r}; this adapter has {tuple(np.shape(tensor))}. "
                    "Was it made with another LoRA rank or model?"
                )

    def assign_to(self, model):
        """Write this state into the LoRA variables of `model`.

        Every path and shape is checked before the first write, so a
        mismatch leaves the model unchanged.
        """
        variables = lora_variables(model)
        AdapterState(variables).check_compatible(self, what="state assigned")
        for path, variable in variables.items():
            value = self._tensors[path]
            if is_distributed(value):
                # The variable's buffers are donated to the training step:
                # it gets its own copy, and keeps its layout (`assign`
                # re-lays out a value only if its sharding differs).
                value = device_copy(value)
            variable.assign(value)

    def save(self, filepath, backbone):
        """Save in KerasHub's `.lora.h5` format, atomically.

        The file loads with `backbone.load_lora_weights(filepath)` in KerasHub
        and with `AdapterState.load`. It also records `alpha` and the variable
        paths, which KerasHub ignores and `load` checks.

        Args:
            filepath: str. The path, ending in `.lora.h5`.
            backbone: `keras_hub.models.PaliGemmaBackbone`. The backbone this
                state belongs to (LoRA enabled); it fixes the layer order.
        """
        from keras.src.saving.saving_lib import H5IOStore

        filepath = os.fspath(filepath)
        if not filepath.endswith(".lora.h5"):
            raise ValueError(
                f"The filename must end in `.lora.h5`. Received: {filepath}"
            )
        layers = adapted_layers(backbone)
        paths = [
            [layer.lora_kernel_a.path, layer.lora_kernel_b.path]
            for layer in layers
        ]
        self.check_compatible(
            {p: self._tensors.get(p) for pair in paths for p in pair},
            what="backbone",
        )
        partial = filepath + ".partial"
        store = H5IOStore(partial, mode="w")
        try:
            metadata = {
                "alpha": float(layers[0].lora_alpha),
                "paths": json.dumps(paths),
            }
            lora_store = store.make("lora", metadata=metadata)
            lora_store["rank"] = int(backbone._lora_rank)
            for index, (path_a, path_b) in zip(
                backbone._lora_enabled_layers, paths
            ):
                inner = store.make(f"lora/{index}")
                inner["lora_kernel_a"] = np.asarray(self._tensors[path_a])
                inner["lora_kernel_b"] = np.asarray(self._tensors[path_b])
        finally:
            store.close()
        os.replace(partial, filepath)

    @classmethod
    def load(cls, filepath, backbone):
        """Read a `.lora.h5` file saved by keras_pam or by KerasHub.

        Args:
            filepath: str. The `.lora.h5` file.
            backbone: `keras_hub.models.PaliGemmaBackbone`. The LoRA-enabled
                backbone the file is for; its layer order maps the file's
                entries to variable paths.

        Returns:
            An `AdapterState` of numpy arrays.
        """
        from keras.src.saving.saving_lib import H5IOStore

        filepath = os.fspath(filepath)
        if not os.path.exists(filepath):
            raise FileNotFoundError(f"No adapter file at {filepath!r}.")
        layers = adapted_layers(backbone)
        if not layers:
            raise ValueError(
                "The backbone has no LoRA; enable LoRA before loading."
            )
        try:
            store = H5IOStore(filepath, mode="r")
        except OSError as error:
            raise ValueError(
                f"{filepath!r} is not a readable .lora.h5 file: {error}"
            ) from error
        try:
            lora_store = store.get("lora")
            if "rank" not in lora_store.keys():
                raise ValueError(f"{filepath!r} holds no LoRA adapter.")
            rank = int(lora_store["rank"][()])
            if rank != backbone._lora_rank:
                raise ValueError(
                    f"The adapter file {filepath!r} has LoRA rank {rank}, "
                    f"but the model has rank {backbone._lora_rank}. "
                    "Both ranks must match."
                )
            stored = {k for k in store.h5_file["lora"].keys() if k != "vars"}
            expected = {str(i) for i in backbone._lora_enabled_layers}
            if stored != expected:
                raise ValueError(
                    f"The adapter file {filepath!r} adapts {len(stored)} "
                    f"layers, but the model adapts {len(expected)}: it was "
                    "saved from another model or another set of target layers."
                )
            tensors = {}
            for index, layer in zip(backbone._lora_enabled_layers, layers):
                inner = store.get(f"lora/{index}")
                if "lora_kernel_a" not in inner.keys():
                    raise ValueError(
                        f"The adapter file {filepath!r} has no factors for "
                        f"layer {index} ({layer.path}): it was saved from "
                        "another model."
                    )
                tensors[layer.lora_kernel_a.path] = inner["lora_kernel_a"]
                tensors[layer.lora_kernel_b.path] = inner["lora_kernel_b"]
        finally:
            store.close()
        state = cls(tensors)
        AdapterState(lora_variables(backbone)).check_compatible(
            state, what=f"adapter file {filepath!r}"
        )
        return state


def zero_copies(lora_variables, name_prefix):
    """Non-trainable zero variables shaped, typed and laid out (under the
    current `keras.distribution`) like `lora_variables`, in their order,
    named `f"{name_prefix}_{index}"`: an adapter-sized slot that a train
    step reads as state, so new values never retrace it.

    Args:
        lora_variables: dict. Path to LoRA factor.
        name_prefix: str. The variables' name prefix.

    Returns:
        A list of `keras.Variable`.
    """
    distribution = keras.distribution.distribution()
    copies = []
    for index, variable in enumerate(lora_variables.values()):
        layout = None
        if distribution is not None:
            layout = distribution.get_variable_layout(variable)
        copies.append(
            keras.Variable(
                keras.initializers.Zeros(),
                shape=variable.shape,
                dtype=variable.dtype,
                trainable=False,
                name=f"{name_prefix}_{index}",
                layout=layout,
            )
        )
    return copies


def initial_adapter(model, seed, draw=None):
    """A fresh adapter drawn from `seed` alone, whatever the random state.

    Every `A` factor is He-uniform (Keras's `enable_lora` initialiser,
    with Keras's fan-in convention), every `B` factor zero, so the update
    starts at zero. Factor `i` (in `lora_variables` order) is drawn by
    numpy from the seed `(seed, i)`: the same on every backend, and the
    same however many models were built or tasks learned before.

    Args:
        model: the model (or backbone) whose LoRA factors to draw.
        seed: int. The seed.
        draw: int. Another draw from the same seed, from the seed
            `(seed, draw, i)` (a task's fresh start: its index). Defaults
            to `None`, the run's initial adapter.

    Returns:
        An `AdapterState`.

    Example:
    ```python
    first = initial_adapter(causal_lm, seed=0)
    task_3 = initial_adapter(causal_lm, seed=0, draw=3)  # other A factors
    ```
    """
    stream = [int(seed)] if draw is None else [int(seed), int(draw)]
    tensors = {}
    for index, (path, variable) in enumerate(lora_variables(model).items()):
        shape = tuple(variable.shape)
        if path.endswith("lora_kernel_b"):
            tensors[path] = np.zeros(shape, "float32")
            continue
        fan_in = shape[0] if len(shape) == 2 else 1
        if len(shape) > 2:
            fan_in = shape[-2] * int(np.prod(shape[:-2]))
        limit = math.sqrt(6.0 / max(1, fan_in))
        rng = np.random.default_rng([*stream, index])
        tensors[path] = rng.uniform(-limit, limit, shape).astype("float32")
    return AdapterState(tensors)
