"""Draw a few training examples of every generated task, as one PNG.

One row per task of `keras_pam.datasets.ALL_TASK_NAMES` at the default
image size (64) and ViT patch (16), each image titled with its question
and answer, the patch borders drawn faintly:

    KERAS_BACKEND=jax python benchmarks/task_gallery.py \\
        --output docs/images/task_gallery.png
"""

import argparse
import os

from keras_pam import datasets
from keras_pam.plotting import plot_task_gallery


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--output",
        default=os.path.join("docs", "images", "task_gallery.png"),
        help="the PNG to write (default: docs/images/task_gallery.png)",
    )
    parser.add_argument(
        "--examples", type=int, default=4, help="images per task (default: 4)"
    )
    args = parser.parse_args()

    tasks = [
        datasets.make_task(name, num_train=args.examples, num_test=0, seed=0)
        for name in datasets.ALL_TASK_NAMES
    ]
    folder = os.path.dirname(args.output)
    if folder:
        os.makedirs(folder, exist_ok=True)
    plot_task_gallery(
        tasks,
        examples_per_task=args.examples,
        path=args.output,
        title="The generated tasks: training examples, question → answer",
    )
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
