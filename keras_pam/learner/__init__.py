"""`ContinualLearner` and its training loop: the LoRA model, a task's fit,
recipes' schedule, presets, resume, a study's shared model. May import
every layer below it (distribution ... runs)."""
