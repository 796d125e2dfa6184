"""`python -m keras_pam`: the `keras-pam` command line."""

import sys

from keras_pam.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main())
