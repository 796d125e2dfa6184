"""Plot a tiny base's perceptions against its pretraining steps.

Reads the perception log that `keras-pam pretrain` records in the preset's
metadata (each perception scored on fresh generic questions every chunk)
and draws it.

    KERAS_BACKEND=jax python benchmarks/perception_curves.py \
        --output docs/images/perception_curves.png

Without `--preset` it plots the base that ships with keras_pam.
"""

import argparse

from keras_pam.models import check_base_preset
from keras_pam.models import shipped_base_preset
from keras_pam.plotting import plot_perception_log


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None)
    parser.add_argument("--output", default="docs/images/perception_curves.png")
    args = parser.parse_args()
    preset = args.preset or shipped_base_preset()
    metadata = check_base_preset(preset)
    settings = metadata["settings"]
    minutes = (metadata.get("build_seconds") or 0) / 60
    title = (
        f"Tiny base: {settings['steps']} steps of {settings['batch_size']}, "
        f"peak lr {settings['learning_rate']:g} ({minutes:.0f} min)"
    )
    # The chunks that end within the places-first share of the steps.
    chunk = settings["chunk_steps"]
    places_first = settings.get("places_first", 0) * settings["steps"]
    places_first_steps = int(places_first // chunk * chunk)
    plot_perception_log(
        metadata["perception_log"], title, args.output, places_first_steps
    )
    last = metadata["perception_log"][-1]
    print(f"Wrote {args.output}; at step {last['step']}: {last['accuracy']}")


if __name__ == "__main__":
    main()
