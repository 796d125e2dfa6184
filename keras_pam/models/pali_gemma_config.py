"""The backbone configurations of real PaliGemma presets, shipped offline."""

import json
import os

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def pali_gemma_config(name):
    """The `PaliGemmaBackbone` configuration of a real KerasHub preset.

    The configurations ship with the package (`keras_pam/models/configs`),
    written from KerasHub's documented values with the source of each value
    in the file, so that a model of the preset's exact architecture builds
    with nothing downloaded (`keras_pam.models.build_pali_gemma`).

    Args:
        name: str. A preset name: `"pali_gemma_3b_224"` (PaliGemma, Gemma
            2B) or `"pali_gemma2_pt_3b_224"` (PaliGemma 2, Gemma 2 2B), or
            the path of a JSON file of the same form.

    Returns:
        A dict: the `PaliGemmaBackbone` keyword arguments.

    Example:
    ```python
    config = pali_gemma_config("pali_gemma2_pt_3b_224")
    config["final_logit_soft_cap"]  # 30.0
    ```
    """
    path = name
    if not (isinstance(name, str) and name.endswith(".json")):
        path = os.path.join(CONFIG_DIR, f"{name}.json")
        if not os.path.isfile(path):
            known = sorted(
                f[: -len(".json")]
                for f in os.listdir(CONFIG_DIR)
                if f.endswith(".json")
            )
            raise ValueError(
                f"No shipped configuration named {name!r}. Known: {known}."
            )
    with open(path) as f:
        spec = json.load(f)
    if spec.get("class_name") != "PaliGemmaBackbone":
        raise ValueError(
            f"{path} is a {spec.get('class_name')!r} configuration, not a "
            "'PaliGemmaBackbone' one."
        )
    return dict(spec["config"])
