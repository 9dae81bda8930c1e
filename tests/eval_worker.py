"""One of two processes (``JAX_*`` variables set by tests/test_eval_per_host.py): embeds a split
with the training loop's evaluation path and saves what it read and what it got.

``python eval_worker.py OUT_DIR`` writes ``OUT_DIR/process_<i>.npz``: ``embeddings`` (every
process's copy of the whole split's), ``reads`` (records this process read from the source) and
``retrieval_top1``.
"""

import pathlib
import sys

import numpy as np

from pclr_jax.runtime.distributed import make_mesh, maybe_initialize_distributed

BATCH_SIZE = 16


class CountingSource:
    """A split's source that counts the records read from it."""

    def __init__(self, source):
        self.source, self.reads = source, 0

    def __len__(self):
        return len(self.source)

    def __getitem__(self, row):
        self.reads += 1
        return self.source[row]


def embed_counting_reads(split, mesh):
    """``(embeddings, records read, metrics)`` of the evaluation path on ``split``."""
    import jax
    from test_eval_per_host import MODEL

    from pclr_jax.model.encoder import init_variables
    from pclr_jax.step.train_step import make_local_embed_fn
    from pclr_jax.training.periodic_eval import embed_split, retrieval_metrics

    counting = CountingSource(split.source)
    split = type(split)(source=counting, index=split.index)
    variables = init_variables(MODEL, jax.random.key(0))
    embeddings = embed_split(make_local_embed_fn(MODEL, mesh), variables, split, BATCH_SIZE)
    return embeddings, counting.reads, retrieval_metrics(embeddings, split.index)


def main() -> None:
    maybe_initialize_distributed()
    import jax
    from test_eval_per_host import eval_split

    embeddings, reads, metrics = embed_counting_reads(eval_split(), make_mesh())
    out = pathlib.Path(sys.argv[1]) / f"process_{jax.process_index()}.npz"
    np.savez(out, embeddings=embeddings, reads=reads, retrieval_top1=metrics["retrieval_top1"])


if __name__ == "__main__":
    main()
