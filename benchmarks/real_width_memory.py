"""Where `learn_task`'s host memory goes on a real-width PaliGemma.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/real_width_memory.py
    KERAS_BACKEND=jax python benchmarks/real_width_memory.py \
        --config pali_gemma2_pt_3b_224 --json real_width_memory.json

The model is a preset's real architecture
(`keras_pam.models.build_pali_gemma`: `pali_gemma_3b_224` by default, its
full 257,152-token vocabulary and true widths) with one block per tower
(`--num-layers`, `--vit-num-layers`), random weights in bfloat16, wrapped
in `ContinualLearner(rank=32)` with PAM; one task of 4 examples (224 px)
is learned in one batch of 4, with the task registered for evaluation.

A thread samples the resident set size (RSS) every 10 ms. For each phase
(imports, tokenizer, model build, learner, data, zero-shot evaluation,
`learn_task`, `evaluate_all`, `save_adapter`) it prints the RSS at the
end of the phase and the sampled peak during it, and, on JAX, the bytes of
live device arrays (on CPU they are host memory too: weights, adapter
states on device, optimizer moments). The sizes to compare them with are
printed first: the weights, one adapter, and one batch's inputs.
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

GB = 1e9


class RssSampler:
    """Samples this process's RSS in a thread; keeps the peak per phase."""

    def __init__(self, interval=0.01):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.phases = []
        self._start = time.time()
        self._thread.start()

    def rss(self):
        return self._process.memory_info().rss

    def _run(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, self.rss())
            time.sleep(self._interval)

    def phase(self, name):
        """Close the phase `name`: its end RSS and sampled peak."""
        end = self.rss()
        peak = max(self._peak, end)
        record = {
            "phase": name,
            "seconds": round(time.time() - self._start, 1),
            "rss_end_gb": round(end / GB, 3),
            "rss_peak_gb": round(peak / GB, 3),
            "live_device_gb": round(live_device_bytes() / GB, 3),
        }
        self.phases.append(record)
        print(
            f"{name:<22} {record['seconds']:>7.1f} s  end "
            f"{record['rss_end_gb']:6.2f} GB  peak "
            f"{record['rss_peak_gb']:6.2f} GB  live device "
            f"{record['live_device_gb']:6.2f} GB",
            flush=True,
        )
        self._peak = end
        self._start = time.time()

    def stop(self):
        self._stop.set()


def live_device_bytes():
    """Bytes of every live JAX array (0 on other backends)."""
    if "jax" not in sys.modules:
        return 0
    import keras

    if keras.backend.backend() != "jax":
        return 0
    import jax

    return sum(a.nbytes for a in jax.live_arrays())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pali_gemma_3b_224")
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--vit-num-layers", type=int, default=1)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    sampler = RssSampler()
    import keras
    import numpy as np

    import keras_pam
    from keras_pam import datasets
    from keras_pam.lora import AdapterState
    from keras_pam.models import build_full_vocabulary_tokenizer
    from keras_pam.models import build_pali_gemma

    sampler.phase("imports")
    tokenizer = build_full_vocabulary_tokenizer(datasets.vocabulary_texts())
    sampler.phase("tokenizer")
    causal_lm = build_pali_gemma(
        args.config,
        num_layers=args.num_layers,
        vit_num_layers=args.vit_num_layers,
        tokenizer=tokenizer,
        seed=0,
    )
    weights = sum(
        np.prod(v.shape) * np.dtype(v.dtype).itemsize
        for v in causal_lm.backbone.weights
    )
    sampler.phase("model build")
    learner = keras_pam.ContinualLearner(
        causal_lm, rank=args.rank, align_every=1, eval_batch_size=4
    )
    adapter = sum(
        np.asarray(t).nbytes for t in AdapterState.from_model(learner).values()
    )
    sampler.phase("learner")
    grid = common.model_grid(causal_lm)
    image_size = grid["image_size"]
    task = datasets.make_task(
        "color",
        num_train=args.examples,
        num_test=args.examples,
        seed=0,
        **grid,
    )
    batch = args.batch_size * image_size * image_size * 3 * 4
    print(
        f"weights {weights / GB:.3f} GB, one adapter {adapter / GB:.4f} GB "
        f"(rank {args.rank}), one batch of images {batch / GB:.4f} GB",
        flush=True,
    )
    learner.add_eval_task(task.name, task.test)
    sampler.phase("data")
    learner.evaluate_all()
    sampler.phase("zero-shot evaluation")
    report = learner.learn_task(
        task.train,
        name=task.name,
        epochs=1,
        batch_size=args.batch_size,
        verbose=0,
    )
    sampler.phase("learn_task")
    learner.evaluate_all()
    sampler.phase("evaluate_all")
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "rw.lora.h5")
    learner.save_adapter(path)
    sampler.phase("save_adapter")
    sampler.stop()
    peak = max(p["rss_peak_gb"] for p in sampler.phases)
    print(
        f"peak {peak:.2f} GB; loss {report.history['loss']}; "
        f"weights {weights / GB:.3f} GB; adapter {adapter / GB:.4f} GB"
    )
    if args.json:
        common.write_json(
            args.json,
            {
                "environment": common.environment(),
                "arguments": vars(args),
                "weights_gb": weights / GB,
                "adapter_gb": adapter / GB,
                "phases": sampler.phases,
                "peak_rss_gb": peak,
            },
        )
    del keras


if __name__ == "__main__":
    main()
