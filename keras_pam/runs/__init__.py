"""A run on disk: atomic checkpoints, the run folder, what a run measured
(`RunRecord`), the task backup. May import every layer below it:
distribution, merging, datasets, evaluation, models, strategies."""
