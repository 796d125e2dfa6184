"""Two tiny tasks under Keras's distribution engine, on 8 simulated CPUs.

Run by `tests/test_distribution.py` in a subprocess, because the number of
host devices is fixed when JAX starts: `XLA_FLAGS` and `KERAS_BACKEND` are
set here, before JAX is imported. The script learns the same two tasks on
one device, under `keras.distribution.DataParallel` (8 devices) and under
`keras.distribution.ModelParallel` with `pali_gemma_layout_map` on a
(2 batch, 4 model) mesh, checks that the global adapters match the
single-device run and that the LoRA variables and the global adapter are
laid out over the devices (not gathered on one), and prints a JSON summary
as its last line.

    python tests/distributed_run.py
"""

import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
)

import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_pam import ContinualLearner  # noqa: E402
from keras_pam import datasets  # noqa: E402
from keras_pam.distribution import pali_gemma_layout_map  # noqa: E402
from keras_pam.lora import AdapterState  # noqa: E402
from keras_pam.lora import lora_variables  # noqa: E402
from keras_pam.models import build_tiny_pali_gemma  # noqa: E402

IMAGE_SIZE = 32
PATCH_SIZE = 8
# Relative tolerance of the distributed global adapters: only the order of
# float32 reductions differs from the single-device run.
RELATIVE_TOLERANCE = 1e-4
# A LoRA factor that the layout map splits along the model axis.
SPLIT_FACTOR = "decoder_block_0/ffw_gating/lora_kernel_b"


def learn(preset, tasks, distribution, evaluate=True):
    """Learn `tasks` under `distribution`; return the learner, its report
    and the seconds it took."""
    keras.utils.set_random_seed(0)
    scope = distribution.scope() if distribution else contextlib.nullcontext()
    start = time.time()
    with scope:
        learner = ContinualLearner.from_preset(
            preset, rank=4, align_every=1, eval_batch_size=8
        )
        # A large epsilon: Adam divides gradients at the level of float32
        # noise by about epsilon, which would amplify the reduction-order
        # differences the comparison tolerates.
        learner.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-2, epsilon=1e-3)
        )
        for task in tasks if evaluate else ():
            learner.add_eval_task(task.name, task.test)
        for task in tasks:
            learner.learn_task(
                task.train, name=task.name, epochs=1, batch_size=8, verbose=0
            )
        report = learner.evaluate_all()
    return learner, report, time.time() - start


def max_relative_error(state, reference):
    errors = []
    for path, expected in reference.items():
        expected = np.asarray(expected)
        actual = np.asarray(state[path])  # Gathered here, for the check only.
        scale = max(float(np.max(np.abs(expected))), 1e-6)
        errors.append(float(np.max(np.abs(actual - expected))) / scale)
    return max(errors)


def check_layouts(learner, num_devices, split):
    """Every LoRA variable and global tensor spans all devices; with
    `split`, the layout map's split factors are sharded, not replicated."""
    variables = lora_variables(learner)
    for path, variable in variables.items():
        value = variable.value
        tensor = learner.global_state[path]
        assert isinstance(tensor, jax.Array), (path, type(tensor))
        assert len(value.sharding.device_set) == num_devices, path
        assert len(tensor.sharding.device_set) == num_devices, path
        assert tensor.sharding.is_equivalent_to(value.sharding, tensor.ndim)
    # The fused alignment's masked global copy is laid out like its factor.
    fused = learner.in_step_update
    for path, target in zip(fused.paths, fused.targets):
        value = variables[path].value
        assert target.value.sharding.is_equivalent_to(
            value.sharding, value.ndim
        ), path
    value = variables[SPLIT_FACTOR].value
    tensor = learner.global_state[SPLIT_FACTOR]
    shard_shape = tensor.addressable_shards[0].data.shape
    if split:
        assert "model" in tuple(value.sharding.spec), value.sharding
        assert not value.sharding.is_fully_replicated
        assert not tensor.sharding.is_fully_replicated
        assert shard_shape[-1] == tensor.shape[-1] // split, shard_shape
    else:
        assert value.sharding.is_fully_replicated
        assert shard_shape == tensor.shape
    return {"spec": str(value.sharding.spec), "shard_shape": shard_shape}


def main():
    devices = keras.distribution.list_devices()
    assert len(devices) == 8, devices
    tasks = [
        datasets.make_task(
            name,
            num_train=16,
            num_test=8,
            image_size=IMAGE_SIZE,
            seed=i,
            patch_size=PATCH_SIZE,
        )
        for i, name in enumerate(["color", "shape"])
    ]
    keras.utils.set_random_seed(0)
    causal_lm = build_tiny_pali_gemma(
        texts=datasets.vocabulary_texts(),
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        sequence_length=24,
        # One block per tower has every kind of layer and halves the
        # compilation, which dominates on 2 cores.
        num_layers=1,
        vit_num_layers=1,
    )
    summary = {}
    with tempfile.TemporaryDirectory() as folder:
        preset = os.path.join(folder, "tiny")
        causal_lm.save_to_preset(preset)
        # The reference only trains: scoring compiles a decoder, and the
        # distributed runs compare their matrices with each other.
        single, _, seconds = learn(preset, tasks, None, evaluate=False)
        summary["single_seconds"] = round(seconds, 1)
        reference = single.global_state
        initial = single.initial_state
        assert not any(isinstance(t, jax.Array) for t in reference.values())

        mesh = keras.distribution.DeviceMesh(
            (2, 4), ["batch", "model"], devices
        )
        runs = {
            "data_parallel": (
                keras.distribution.DataParallel(devices=devices),
                None,
            ),
            "model_parallel": (
                keras.distribution.ModelParallel(
                    layout_map=pali_gemma_layout_map(mesh),
                    batch_dim_name="batch",
                ),
                4,
            ),
        }
        for name, (distribution, split) in runs.items():
            learner, report, seconds = learn(preset, tasks, distribution)
            # The same start: the initial adapters are equal.
            assert max_relative_error(learner.initial_state, initial) < 1e-6
            error = max_relative_error(learner.global_state, reference)
            assert error < RELATIVE_TOLERANCE, (name, error)
            assert np.all(np.isfinite(report.matrix)), report.matrix
            summary[name] = {
                "seconds": round(seconds, 1),
                "max_relative_error": error,
                "matrix": report.matrix.tolist(),
                **check_layouts(learner, len(devices), split),
            }
            # The model's variables hold the global adapter.
            live = AdapterState.from_model(learner)
            assert max_relative_error(live, learner.global_state) == 0.0
        matrices = [summary[name]["matrix"] for name in runs]
        np.testing.assert_allclose(matrices[0], matrices[1])
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    sys.exit(main())
