"""The `keras-pam` command line and the experiment runner: its flags and
settings, the study grid, one cell's run, the report. May import every
other subpackage (the top layer)."""

from keras_pam.experiment.cell import BENCHMARKS
from keras_pam.experiment.cell import CELL_FILE
from keras_pam.experiment.cell import RECIPES
from keras_pam.experiment.cell import _make_strategy
from keras_pam.experiment.cell import cell_label
from keras_pam.experiment.cell import is_video
from keras_pam.experiment.cell import known_orders
from keras_pam.experiment.cell import known_tasks
from keras_pam.experiment.cell import make_study_suite
from keras_pam.experiment.cell import paper_task
from keras_pam.experiment.cell import run_method
from keras_pam.experiment.cell import shared_model
from keras_pam.experiment.cell import suite_recipes
from keras_pam.experiment.cell import task_recipe
from keras_pam.experiment.grid import RUN_FILE
from keras_pam.experiment.grid import cell_settings
from keras_pam.experiment.grid import check_log_dir
from keras_pam.experiment.grid import check_settings
from keras_pam.experiment.grid import resolve_preset
from keras_pam.experiment.grid import run_study
from keras_pam.experiment.grid import upgrade_settings
from keras_pam.experiment.regime import IN_REGIME
from keras_pam.experiment.regime import NOT_MEASURED
from keras_pam.experiment.regime import OUTSIDE
from keras_pam.experiment.regime import REGIME_METHODS
from keras_pam.experiment.regime import REGIME_TARGETS
from keras_pam.experiment.regime import format_regime
from keras_pam.experiment.regime import study_regime
from keras_pam.experiment.study_report import MATRIX_HEADER
from keras_pam.experiment.study_report import difference_sentence
from keras_pam.experiment.study_report import format_difference
from keras_pam.experiment.study_report import format_report
from keras_pam.experiment.study_report import format_summary_table
from keras_pam.experiment.study_report import format_table
from keras_pam.experiment.study_report import mean_report
from keras_pam.experiment.summary import CONFIDENCE
from keras_pam.experiment.summary import DEFAULT_PAIRS
from keras_pam.experiment.summary import DIFFERENCE_METRICS
from keras_pam.experiment.summary import METRIC_COLUMNS
from keras_pam.experiment.summary import aggregate
from keras_pam.experiment.summary import differences
from keras_pam.experiment.summary import study_pairs
