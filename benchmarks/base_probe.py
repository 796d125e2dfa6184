"""What the tiny base perceives before any task: accuracy per question kind.

Scores a base preset, with no adapter, on fresh examples of its own
pretraining mixture (every generic question phrasing) and zero-shot on each
generated task, so a reader can see which perception the base already has.

    KERAS_BACKEND=jax python benchmarks/base_probe.py [--preset DIR]

Without `--preset` it probes the base that ships with keras_pam.
"""

import argparse
import collections

import numpy as np

from keras_pam import datasets
from keras_pam.scoring import Scorer


def question_kind(prompt):
    for marker, kind in (("relative", "relation"), ("larger", "larger")):
        if marker in prompt:
            return kind
    return prompt.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None)
    parser.add_argument("--examples", type=int, default=1500)
    parser.add_argument("--per-kind", type=int, default=100)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()

    import keras_hub

    from keras_pam.models import shipped_base_preset

    preset = args.preset or shipped_base_preset()
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(preset)
    scorer = Scorer(causal_lm)
    size = causal_lm.backbone.image_size
    data = datasets.pretraining_mixture(
        args.examples, image_size=size, seed=args.seed
    )
    kinds = collections.defaultdict(list)
    for i, prompt in enumerate(data["prompts"]):
        if prompt != "caption en\n":
            kinds[question_kind(prompt)].append(i)
    print(f"Base {preset}")
    print("Generic questions of the pretraining mixture (fresh examples):")
    for kind, index in sorted(kinds.items()):
        index = np.asarray(index[: args.per_kind])
        split = {k: data[k][index] for k in ("images", "prompts", "responses")}
        print(f"  {kind:48s} n={len(index):3d} acc {scorer.score(split):.2f}")
    print("Zero-shot on each task (its own question, never pretrained on):")
    for name in datasets.TASK_NAMES:
        test = datasets.make_task(name, 0, args.per_kind, size, args.seed).test
        print(f"  {name:16s} acc {scorer.score(test):.2f}")


if __name__ == "__main__":
    main()
