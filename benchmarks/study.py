"""A named study of the paper's claims: `keras-pam study`, as a script.

    KERAS_BACKEND=jax python benchmarks/study.py NAME [--seeds 0,1,2]
        [--orders order1,order2,order3] [--output DIR] [--quick]

The studies, their claims and their output are in docs/studies.md;
`python benchmarks/study.py --help` lists them.
"""

import shlex
import sys

from keras_pam.experiment import cli

if __name__ == "__main__":
    arguments = sys.argv[1:]
    command = " ".join(
        ["python", "benchmarks/study.py"] + [shlex.quote(a) for a in arguments]
    )
    sys.exit(cli.main(["study"] + arguments, command=command))
