"""The GPU figures in one command, under a time budget.

On a GPU machine with the project installed, from the repository root:

    KERAS_BACKEND=jax python benchmarks/device_check.py
    KERAS_BACKEND=jax python benchmarks/device_check.py --smoke \\
        --output /tmp/device_check     # reduced, on a CPU, ~5 minutes

On a GPU image that has JAX, PyTorch, transformers and peft but no Keras,
KerasHub or TensorFlow, install Keras and KerasHub from wheels made
beforehand in `.whl` (see "Wheels" below; TensorFlow is not needed, see
"TensorFlow" below), then run it on a budget of 8 minutes:

    python3 -m pip install -q --no-index --no-deps --no-compile \\
        --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \\
        && export PYTHONPATH=/tmp/site || exit
    KERAS_BACKEND=jax PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py \\
        --budget-seconds 480

Phases, each in its own child process (so each has its own device-memory
peak and host peak RSS, and a hung phase is killed at its time limit):

1. `environment`: versions, the JAX devices, CUDA in PyTorch, the GPU's
   bf16 and f32 matmul rates through JAX.
2. `keras_pam`: the full-depth `pali_gemma_3b_224` architecture
   (`keras_pam.models.build_pali_gemma`, 18 + 27 blocks, the full
   257,152-token vocabulary, random bfloat16 weights) in
   `ContinualLearner(rank=32)`, fitted on preprocessed 224 px batches with
   the callbacks `learn_task` gives `fit` on a second task (PAM's
   alignment, the non-finite-loss stop), as `train_step_vs_peft.py`'s
   `keras_pam` variant does. Timed after a warm-up fit that compiles.
3. `kerashub`: the same model with KerasHub's own `enable_lora(32)` on the
   same layers and a plain `fit`: the ratio keras_pam / KerasHub. (Without
   TensorFlow and Grain, KerasHub's `fit` cannot batch arrays; then
   `keras.Model.fit` of the model runs the same step:
   `train_step_vs_peft.plain_fit`.)
4. `peft_small`: `train_step_vs_peft.py`'s `small` size in this process
   (keras_pam, plain KerasHub, transformers + PEFT eager; `--peft-compile`
   adds `torch.compile`), with the Hugging Face model on `cuda` when JAX
   and PyTorch both see a GPU.
5. `real_width_tests`: `pytest tests/test_real_width.py --run-large`, if
   that file exists, in whatever time is left (`--smoke`: collection only).

Each phase starts only if enough of `--budget-seconds` is left and is
killed when the budget runs out; the results (JSON and a markdown table,
with the ratios and the CPU figures of benchmarks/README.md beside them)
are rewritten after every phase, so a killed run still leaves them, in
`--output` (default: `$OUT` if set, else
`benchmarks/results/device_check/`), with one log per phase.

Memory: device memory is JAX's `peak_bytes_in_use` of device 0 (JAX does
not preallocate here: `XLA_PYTHON_CLIENT_PREALLOCATE=false`) and
`torch.cuda.max_memory_allocated`; host memory is the child's peak RSS
(`ru_maxrss`). On a CPU, JAX reports no device memory.

TensorFlow: `keras_pam` imports it at module level (`run_folder.py` and
`checkpoint.py`, for `tf.io.gfile`), but KerasHub and the code timed here
do not need it, so a GPU image need not install its wheel (~600 MB).
Where it is not installed, this script imports `keras_pam`
with a placeholder `tensorflow` module (after Keras and KerasHub, which
then see no TensorFlow), removed right after; any use of it raises. Run
folders and tf.data inputs are therefore not exercised there.

`--smoke`: the same phases with one block per tower, 2 examples per
batch, 2 + 2 steps, the `tiny` size for `peft_small`, and only the
collection of the real-width tests.

Wheels (made here, once, from the repository root; 4.7 MB):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: \\
        --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl keras==3.15.1 \\
        keras-hub==0.32.0 namex==0.1.0 optree==0.20.0 kagglehub==1.0.2
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GB = 1e9
LEARNING_RATE = 5e-4
# Wall-clock share of the budget each phase may take at most, and the
# seconds that must be left for it to start.
PHASES = {
    "environment": (0.15, 20),
    "keras_pam": (0.4, 90),
    "kerashub": (0.35, 90),
    "peft_small": (0.35, 60),
    "real_width_tests": (1.0, 60),
}
# Seconds kept back to write the results.
RESERVE = 10
# The JAX run of benchmarks/README.md, section 1 (2 CPU cores, load 1.5 to
# 1.8): median ms per step at the small size, batch 8, rank 8.
CPU_REFERENCE_SMALL_MS = {
    "keras_pam": 255.5,
    "kerashub": 278.9,
    "hf_eager": 166.8,
    "hf_compiled": 120.9,
}
PLACEHOLDER_VARIABLE = "DEVICE_CHECK_TF_PLACEHOLDER"


class _Placeholder(types.ModuleType):
    """Stands in for TensorFlow while `keras_pam` is imported without it:
    any attribute is another placeholder, any call raises."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"{self.__name__}: TensorFlow is not installed (a placeholder "
            "of benchmarks/device_check.py)."
        )


def import_keras_pam():
    """Import `keras_pam`, with a placeholder TensorFlow if none is
    installed. Returns whether the placeholder was used."""
    if "keras_pam" in sys.modules:
        return "tensorflow" not in sys.modules
    if importlib.util.find_spec("tensorflow") is not None:
        import keras_pam  # noqa: F401

        return False
    import keras  # noqa: F401
    import keras_hub  # noqa: F401 (sees no TensorFlow)

    sys.modules["tensorflow"] = _Placeholder("tensorflow")
    try:
        import keras_pam  # noqa: F401
    finally:
        del sys.modules["tensorflow"]
    return True


if os.environ.get(PLACEHOLDER_VARIABLE) == "1" and __name__ != "__main__":
    # Loaded as a pytest plugin (`-p device_check`) for the real-width
    # tests: `keras_pam` is imported before the tests' conftest.
    import_keras_pam()


# ---------------------------------------------------------------- children

# The child's result so far and its file: rewritten at every stage, so a
# phase killed at its time limit still reports how far it got.
_PARTIAL = {"path": None, "result": {}}


def save_progress(values):
    """Merge `values` into the child's result and write it (with the
    memory figures so far)."""
    result = _PARTIAL["result"]
    result.update(values)
    result.update(memory_figures())
    if _PARTIAL["path"]:
        with open(_PARTIAL["path"], "w") as f:
            json.dump(result, f, indent=1, default=str)


def memory_figures():
    """Peak device memory (JAX, PyTorch) and host peak RSS, in GB."""
    import resource

    figures = {
        "host_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        * 1024
        / GB
    }
    if "jax" in sys.modules:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            figures["jax_peak_device_gb"] = stats["peak_bytes_in_use"] / GB
            figures["jax_device_limit_gb"] = stats.get("bytes_limit", 0) / GB
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            figures["torch_peak_device_gb"] = (
                torch.cuda.max_memory_allocated() / GB
            )
    return figures


def versions():
    info = {"python": platform.python_version(), "machine": platform.machine()}
    for name in (
        "keras",
        "keras_hub",
        "jax",
        "jaxlib",
        "torch",
        "transformers",
        "peft",
        "tensorflow",
    ):
        try:
            from importlib.metadata import version

            info[name] = version(name.replace("_", "-"))
        except Exception:
            info[name] = None
    return info


def jax_matmul_rate(dtype, size, repeats=5):
    """FLOP/s of a `size`^3 matmul on JAX's default device."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0))
    a = jax.random.normal(keys[0], (size, size), dtype)
    b = jax.random.normal(keys[1], (size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def phase_environment(args):
    import jax

    device = jax.devices()[0]
    result = {
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "jax_platform": device.platform,
        "jax_device_kind": device.device_kind,
        "jax_device_count": jax.device_count(),
        "jax_default_matmul_precision": str(
            jax.config.jax_default_matmul_precision
        ),
        "tensorflow_installed": importlib.util.find_spec("tensorflow")
        is not None,
    }
    size = 8192 if device.platform == "gpu" else 1024
    result["jax_matmul_tflops"] = {
        name: jax_matmul_rate(dtype, size) / 1e12
        for name, dtype in (("bfloat16", "bfloat16"), ("float32", "float32"))
    }
    try:
        import torch

        result["torch_cuda"] = torch.cuda.is_available()
        if result["torch_cuda"]:
            result["torch_device_name"] = torch.cuda.get_device_name(0)
    except ImportError:
        result["torch_cuda"] = None
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total,driver_version",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        result["nvidia_smi"] = smi.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        result["nvidia_smi"] = None
    return result


def build_full_width(args):
    """The `--config` architecture (`--num-layers` blocks per tower) and
    one preprocessed batch of 224 px images."""
    import common
    import numpy as np

    from keras_pam import datasets
    from keras_pam.models import build_pali_gemma

    start = time.perf_counter()
    causal_lm = build_pali_gemma(
        args.config,
        num_layers=args.num_layers,
        vit_num_layers=args.vit_num_layers,
        dtype="bfloat16",
        texts=datasets.vocabulary_texts(),
        sequence_length=args.sequence_length,
        seed=0,
    )
    build_seconds = time.perf_counter() - start
    backbone = causal_lm.backbone
    task = datasets.make_task(
        "color",
        num_train=args.batch_size,
        num_test=1,
        **common.model_grid(causal_lm),
    )
    raw = {k: task.train[k] for k in ("images", "prompts", "responses")}
    batch = common.preprocessed_batch(causal_lm, raw)
    info = {
        "config": args.config,
        "num_layers": backbone.num_layers,
        "vit_num_layers": backbone.vit_num_layers,
        "parameters": int(sum(np.prod(v.shape) for v in backbone.weights)),
        "build_seconds": build_seconds,
        "batch_size": args.batch_size,
        "tokens_per_example": backbone.image_sequence_length
        + args.sequence_length,
    }
    save_progress(info)
    return causal_lm, batch, info


def time_fits(model, batch, args, callbacks_fn):
    """Warm-up fit (compiles), then `--rounds` timed fits of `--steps`."""
    import common
    import numpy as np

    def fit(steps):
        x, y, sample_weight = common.tile(batch, steps)
        seconds, history = common.timed(
            model.fit,
            x,
            y,
            sample_weight=sample_weight,
            batch_size=args.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=callbacks_fn(),
        )
        return seconds, [float(v) for v in history.history.get("loss", [])]

    warmup_seconds, _ = fit(args.warmup_steps)
    save_progress({"warmup_seconds": warmup_seconds})
    per_step, losses = [], []
    for _ in range(args.rounds):
        seconds, loss = fit(args.steps)
        per_step.append(seconds / args.steps)
        losses += loss
        save_progress({"samples": per_step, "losses": losses})
    return {
        "warmup_seconds": warmup_seconds,
        "warmup_steps": args.warmup_steps,
        "steps_per_measurement": args.steps,
        "seconds_per_step": common.summarize(per_step),
        "samples": per_step,
        "losses": losses,
        "finite": bool(np.all(np.isfinite(losses))),
    }


def phase_keras_pam(args):
    import common
    import keras
    import numpy as np

    from keras_pam import ContinualLearner
    from keras_pam.strategies import TaskContext
    from keras_pam.training import StopOnNonFiniteLoss

    causal_lm, batch, info = build_full_width(args)
    start = time.perf_counter()
    learner = ContinualLearner(causal_lm, rank=args.rank)
    learner.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    info["learner_seconds"] = time.perf_counter() - start
    save_progress(info)
    # A second task: PAM aligns (on JAX inside the train step).
    task = TaskContext(
        name="device_check",
        index=2,
        examples={},
        previous_global=learner.global_state,
        initial=learner.initial_state,
    )

    def callbacks():
        # The callbacks `learn_task` gives `fit` (`training.fit_task`).
        return list(learner.strategy.callbacks(task)) + [
            StopOnNonFiniteLoss(task.name)
        ]

    try:
        info.update(
            time_fits(common.plain_fit(learner), batch, args, callbacks)
        )
    finally:
        if learner.in_step_update is not None:
            learner.in_step_update.stop()
    info["trainable_parameters"] = int(
        sum(np.prod(v.shape) for v in learner.trainable_weights)
    )
    return info


def phase_kerashub(args):
    import common
    import numpy as np

    causal_lm, batch, info = build_full_width(args)
    common.compile_plain_kerashub_lora(causal_lm, args.rank, LEARNING_RATE)
    import train_step_vs_peft

    model = train_step_vs_peft.plain_fit(causal_lm)
    info["fit"] = (
        "PipelineModel.fit" if model is causal_lm else "keras.Model.fit"
    )
    info.update(time_fits(model, batch, args, lambda: None))
    info["trainable_parameters"] = int(
        sum(np.prod(v.shape) for v in causal_lm.trainable_weights)
    )
    return info


def phase_peft_small(args):
    import common
    import jax
    import train_step_vs_peft

    try:
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as error:
        return {"skipped": f"transformers/peft/torch not importable: {error}"}
    on_gpu = jax.devices()[0].platform == "gpu"
    device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        # The "% of peak" reference: PyTorch's float32 matmul on the GPU.
        a = torch.randn(8192, 8192, device=device)
        torch.matmul(a, a)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            torch.matmul(a, a)
        torch.cuda.synchronize()
        rate = 5 * 2.0 * 8192**3 / (time.perf_counter() - start)
        del a
        torch.cuda.reset_peak_memory_stats()
    else:
        rate = common.matmul_flops_per_second()["best"]
    namespace = argparse.Namespace(
        quick=False,
        batch_size=8,
        rank=8,
        steps=args.peft_steps,
        rounds=args.peft_rounds,
        no_compile=not args.peft_compile,
        jit_compile="auto",
        torch_device=device,
    )
    results = train_step_vs_peft.benchmark_size(args.peft_size, namespace, rate)
    train_step_vs_peft.print_results(results)
    results["matmul_reference_flops_per_second"] = rate
    results["matmul_reference"] = (
        "torch float32 8192^3 on cuda" if device == "cuda" else "CPU"
    )
    results["memory_note"] = (
        "jax_peak_device_gb is the highest of the two Keras variants' "
        "peaks (one process); torch_peak_device_gb is the PEFT model's"
    )
    return results


def child(args):
    """Run one phase; write its result (and memory figures) as JSON."""
    sys.path.insert(0, HERE)
    _PARTIAL["path"] = args.result
    save_progress({"complete": False})
    if args.phase != "environment":
        save_progress({"tensorflow_placeholder": import_keras_pam()})
    function = globals()[f"phase_{args.phase}"]
    save_progress(function(args))
    save_progress({"complete": True})


# ------------------------------------------------------------------ parent


def run_child(name, args, timeout, log_path):
    """Run a phase in a child process with `timeout` seconds."""
    result_path = os.path.join(args.output, f".{name}.result.json")
    if os.path.exists(result_path):
        os.remove(result_path)
    command = [sys.executable, os.path.abspath(__file__), "--phase", name]
    command += ["--result", result_path] + forwarded(args)
    return run_logged(command, timeout, log_path, result_path)


def run_tests(args, timeout, log_path):
    """`pytest tests/test_real_width.py --run-large` (smoke: collect)."""
    path = os.path.join(ROOT, "tests", "test_real_width.py")
    if not os.path.exists(path):
        return {"skipped": "tests/test_real_width.py does not exist"}
    command = [sys.executable, "-m", "pytest", path, "--run-large"]
    command += ["-p", "no:cacheprovider", "-q", "-rs"]
    if importlib.util.find_spec("xdist") is not None:
        command += ["-n", "0"]  # One process on the one device.
    if args.smoke:
        command.append("--collect-only")
    env = {}
    if importlib.util.find_spec("tensorflow") is None:
        # Load this file as a plugin: it imports keras_pam first.
        command += ["-p", "device_check"]
        env = {PLACEHOLDER_VARIABLE: "1"}
    record = run_logged(command, timeout, log_path, None, env)
    with open(log_path) as f:
        lines = [line.rstrip() for line in f if line.strip()]
    record["summary"] = lines[-1] if lines else ""
    return record


def run_logged(command, timeout, log_path, result_path, extra_env=None):
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, HERE, env.get("PYTHONPATH")) if p
    )
    env.update(extra_env or {})
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=max(1, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            returncode = "timeout"
    record = {
        "returncode": returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "timeout_seconds": round(timeout),
    }
    if result_path and os.path.exists(result_path):
        with open(result_path) as f:
            record.update(json.load(f))
        os.remove(result_path)
    if returncode != 0:
        with open(log_path) as f:
            record["log_tail"] = f.read()[-3000:]
    return record


def forwarded(args):
    """The parent's settings, as child arguments."""
    values = []
    for name in (
        "config",
        "rank",
        "batch_size",
        "sequence_length",
        "warmup_steps",
        "steps",
        "rounds",
        "peft_size",
        "peft_steps",
        "peft_rounds",
    ):
        values += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for name in ("num_layers", "vit_num_layers"):
        value = getattr(args, name)
        values += [f"--{name.replace('_', '-')}", str(value or 0)]
    if args.peft_compile:
        values.append("--peft-compile")
    return values


def ratio(a, b):
    return a / b if a and b else None


def summary(results):
    """The headline figures and ratios."""
    phases = results["phases"]
    rows, ratios = [], {}

    def add(size, name, record, ms, cpu_ms=None):
        rows.append(
            {
                "size": size,
                "variant": name,
                "median_ms": ms,
                "jax_peak_device_gb": record.get("jax_peak_device_gb"),
                "torch_peak_device_gb": record.get("torch_peak_device_gb"),
                "host_peak_rss_gb": record.get("host_peak_rss_gb"),
                "cpu_reference_ms": cpu_ms,
            }
        )

    full = {}
    for name in ("keras_pam", "kerashub"):
        record = phases.get(name, {})
        if "seconds_per_step" not in record and record.get("samples"):
            # Killed at its time limit after some timed rounds.
            record["seconds_per_step"] = {
                "median": statistics.median(record["samples"])
            }
        if "seconds_per_step" in record:
            full[name] = record
            size = (
                f"{record['config']} "
                f"{record['num_layers']}+{record['vit_num_layers']}"
            )
            add(size, name, record, 1e3 * record["seconds_per_step"]["median"])
    if len(full) == 2:
        a, b = full["keras_pam"], full["kerashub"]
        ratios["full_keras_pam_over_kerashub_step"] = ratio(
            a["seconds_per_step"]["median"], b["seconds_per_step"]["median"]
        )
        ratios["full_keras_pam_over_kerashub_device_memory"] = ratio(
            a.get("jax_peak_device_gb"), b.get("jax_peak_device_gb")
        )
        ratios["full_keras_pam_over_kerashub_host_rss"] = ratio(
            a.get("host_peak_rss_gb"), b.get("host_peak_rss_gb")
        )
    small = phases.get("peft_small", {})
    per_step = small.get("seconds_per_step", {})
    for name, stats in per_step.items():
        cpu = None
        if small.get("size") == "small":
            cpu = CPU_REFERENCE_SMALL_MS.get(name)
        add(small.get("size"), name, small, 1e3 * stats["median"], cpu)
    if "keras_pam" in per_step:
        size = small["size"]
        keras_pam = per_step["keras_pam"]["median"]
        for name in ("kerashub", "hf_eager", "hf_compiled"):
            if name in per_step:
                ratios[f"{size}_keras_pam_over_{name}_step"] = ratio(
                    keras_pam, per_step[name]["median"]
                )
        ratios[f"{size}_keras_pam_jax_over_peft_torch_device_memory"] = ratio(
            small.get("jax_peak_device_gb"), small.get("torch_peak_device_gb")
        )
    return rows, ratios


def markdown(results):
    environment = results["phases"].get("environment", {})
    rows, ratios = summary(results)
    device = (
        environment.get("torch_device_name")
        or environment.get("jax_device_kind")
        or "?"
    )
    lines = [
        "# device_check",
        "",
        f"Device: {device} ({environment.get('jax_platform', '?')}); "
        f"nvidia-smi: {environment.get('nvidia_smi')}; "
        f"smoke: {results['smoke']}; budget {results['budget_seconds']} s, "
        f"used {results.get('seconds', 0):.0f} s.",
        "",
        f"Versions: {json.dumps(environment.get('versions', {}))}",
        "",
        "| size | variant | median ms/step | JAX peak device GB | "
        "torch peak device GB | host peak RSS GB | CPU ms (README) |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(value, digits=2):
        return "" if value is None else f"{value:.{digits}f}"

    for row in rows:
        lines.append(
            f"| {row['size']} | {row['variant']} | {cell(row['median_ms'])} "
            f"| {cell(row['jax_peak_device_gb'])} "
            f"| {cell(row['torch_peak_device_gb'])} "
            f"| {cell(row['host_peak_rss_gb'])} "
            f"| {cell(row['cpu_reference_ms'], 1)} |"
        )
    lines += [
        "",
        "One run; medians over the timed rounds. JAX device memory is "
        "`peak_bytes_in_use`, PyTorch's `max_memory_allocated`, host memory "
        "the phase's peak RSS. CPU ms: benchmarks/README.md section 1 (JAX "
        "run, 2 CPU cores; same small size, batch 8, rank 8).",
        "",
        "| ratio | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {cell(v, 3)} |" for k, v in ratios.items()]
    lines += ["", "| phase | status | seconds |", "|---|---|---|"]
    for name, record in results["phases"].items():
        status = record.get("skipped") or f"rc {record.get('returncode')}"
        if record.get("complete") is False:
            status += ", incomplete"
        if "summary" in record:
            status += f": {record['summary']}"
        lines.append(f"| {name} | {status} | {record.get('seconds', '')} |")
    return "\n".join(lines) + "\n"


def write(results, args):
    results["summary_rows"], results["ratios"] = summary(results)
    with open(os.path.join(args.output, "device_check.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(args.output, "device_check.md"), "w") as f:
        f.write(markdown(results))


def parent(args):
    start = time.perf_counter()
    deadline = start + args.budget_seconds
    os.makedirs(args.output, exist_ok=True)
    results = {
        "command": sys.argv,
        "smoke": args.smoke,
        "budget_seconds": args.budget_seconds,
        "arguments": vars(args),
        "phases": {},
    }
    skip = set(filter(None, args.skip.split(",")))
    for name, (share, minimum) in PHASES.items():
        left = deadline - time.perf_counter() - RESERVE
        if name in skip:
            results["phases"][name] = {"skipped": "--skip"}
        elif left < minimum:
            results["phases"][name] = {
                "skipped": f"budget: {left:.0f} s left, needs {minimum} s"
            }
        else:
            timeout = min(left, share * args.budget_seconds)
            print(f"[device_check] {name}: up to {timeout:.0f} s", flush=True)
            log = os.path.join(args.output, f"{name}.log")
            if name == "real_width_tests":
                record = run_tests(args, timeout, log)
            else:
                record = run_child(name, args, timeout, log)
            results["phases"][name] = record
        record = results["phases"][name]
        print(
            f"[device_check] {name}: "
            + json.dumps(
                {
                    k: v
                    for k, v in record.items()
                    if k not in ("samples", "log_tail", "losses")
                    and not isinstance(v, dict)
                },
                default=str,
            )[:1500],
            flush=True,
        )
        if "log_tail" in record:
            print(record["log_tail"][-1500:], flush=True)
        results["seconds"] = time.perf_counter() - start
        write(results, args)
    print(markdown(results), flush=True)
    print(f"[device_check] wrote {args.output}/device_check.{{json,md}}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="reduced, CPU")
    parser.add_argument("--budget-seconds", type=float, default=480)
    parser.add_argument("--output", default=None)
    parser.add_argument("--config", default="pali_gemma_3b_224")
    parser.add_argument(
        "--num-layers", type=int, default=None, help="0: the config's"
    )
    parser.add_argument(
        "--vit-num-layers", type=int, default=None, help="0: the config's"
    )
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--sequence-length", type=int, default=32)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--peft-size", default=None)
    parser.add_argument("--peft-steps", type=int, default=None)
    parser.add_argument("--peft-rounds", type=int, default=None)
    parser.add_argument(
        "--peft-compile", action="store_true", help="add torch.compile"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated phases to leave out"
    )
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    smoke = args.smoke
    defaults = {
        "num_layers": 1 if smoke else 0,
        "vit_num_layers": 1 if smoke else 0,
        "batch_size": 2 if smoke else 4,
        "warmup_steps": 2,
        "steps": 2 if smoke else 5,
        "rounds": 1 if smoke else 2,
        "peft_size": "tiny" if smoke else "small",
        # train_step_vs_peft.py takes a quarter of these at `small`.
        "peft_steps": 4 if smoke else 20,
        "peft_rounds": 1 if smoke else 3,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    # 0 (or none): the configuration's own depth.
    args.num_layers = args.num_layers or None
    args.vit_num_layers = args.vit_num_layers or None
    if args.output is None:
        args.output = os.environ.get("OUT") or os.path.join(
            HERE, "results", "device_check"
        )
    if args.phase:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
