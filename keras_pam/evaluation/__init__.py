"""Scoring and reporting: greedy answers and their accuracy, the paper's
metrics, task and run reports, statistics over cells, plots.
May import the layers below: distribution, merging, datasets."""
