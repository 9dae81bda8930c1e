"""One process of the multi-process restore test (``tests/test_multiprocess_training.py``).

Run as ``python tests/restore_worker.py WORKDIR OUT_DIR`` with the ``JAX_*`` variables of a
multi-process job set: it joins the job, restores ``WORKDIR/encoder`` with ``restore_encoder`` and
writes the restored variables, flattened, to ``OUT_DIR/process_<i>.npz``.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np


def flatten(tree, prefix=()):
    """``(path, leaf)`` pairs of a nested dict, paths joined with ``/``."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from flatten(value, (*prefix, key))
    else:
        yield "/".join(prefix), tree


def main(workdir: str, out_dir: str) -> None:
    from pclr_jax.runtime.distributed import maybe_initialize_distributed
    from pclr_jax.weights.encoder_checkpoint import restore_encoder

    if not maybe_initialize_distributed():
        raise RuntimeError("JAX_COORDINATOR_ADDRESS is not set: not a multi-process run")
    _, variables = restore_encoder(pathlib.Path(workdir) / "encoder")
    flat = {key: np.asarray(value) for key, value in flatten(variables)}
    np.savez(pathlib.Path(out_dir) / f"process_{jax.process_index()}.npz", **flat)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
