"""PCLR pretraining entry point.

    python train.py --config=configs/default.py --workdir=runs/default [--config.FIELD=VALUE ...]

On several hosts, run the same command on every host; ``jax.distributed`` is initialised from the
environment (see docs/training_step.md).
"""

import sys

from pclr_jax.commands.train import run_absl
from pclr_jax.runtime import host_memory

if __name__ == "__main__":
    host_memory.keep_freed_memory()  # before JAX's threads exist
    sys.exit(run_absl(sys.argv))
