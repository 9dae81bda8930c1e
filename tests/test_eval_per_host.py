"""Evaluation on two processes (2 faked CPU devices each, ``jax.distributed`` on 127.0.0.1):
each process reads only its share of the split's records, and both get the embeddings and the
retrieval metric of one process with 8 devices."""

import os
import pathlib
import sys

import numpy as np
from eval_worker import BATCH_SIZE, embed_counting_reads
from multiprocess_jobs import finish_job, job_environment, start_job
from test_loader import make_split

from pclr_jax.model.encoder import EncoderConfig
from pclr_jax.runtime.distributed import make_mesh

WORKER = pathlib.Path(__file__).with_name("eval_worker.py")
MODEL = EncoderConfig(
    n_samples=64,
    stem_filters=8,
    unit_samples=(16,),
    unit_filters=(16,),
    kernel_size=5,
    head_sizes=(16, 16),
)


def eval_split():
    """119 records of 48 patients (tests/test_loader.py's split), 64 samples x 12 leads."""
    return make_split([2, 3, 4, 1, 2, 5, 1, 2, 3, 2] * 4 + [2, 3, 2, 4, 2] + [1] * 3, {0, 3})


def share(process: int, processes: int, n: int, batch_size: int) -> int:
    """Records of ``n`` in process ``process``'s slices of the batches of ``batch_size``."""
    local = batch_size // processes
    starts = np.arange(0, n, batch_size) + process * local
    return int(np.clip(n - starts, 0, local).sum())


def test_each_process_reads_its_share_and_gets_the_single_process_metrics(tmp_path):
    split = eval_split()
    n = len(split.index)
    expected, reads, metrics = embed_counting_reads(split, make_mesh())
    assert reads == n + 1  # one process reads every record (and the first once more, for its shape)

    # The worker imports tests' modules and this checkout's pclr_jax (not an installed one).
    path = os.pathsep.join([str(WORKER.parent), str(WORKER.parents[1])])
    env = {**job_environment(), "PYTHONPATH": path}
    finish_job(start_job([sys.executable, str(WORKER), str(tmp_path)], env=env), timeout=300)
    for process in (0, 1):
        result = np.load(tmp_path / f"process_{process}.npz")
        assert int(result["reads"]) == share(process, 2, n, BATCH_SIZE) + 1
        np.testing.assert_allclose(result["embeddings"], expected, rtol=1e-5, atol=1e-6)
        assert float(result["retrieval_top1"]) == metrics["retrieval_top1"]
    assert share(0, 2, n, BATCH_SIZE) + share(1, 2, n, BATCH_SIZE) == n
