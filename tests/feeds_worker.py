"""One of two processes (``JAX_*`` variables set by tests/test_feeds_multiprocess.py): both
training feeds, gathered over the processes, give the single-host loader's global batches."""

import sys

import numpy as np
from jax.experimental import multihost_utils

from pclr_jax.runtime.distributed import make_mesh, maybe_initialize_distributed


def main() -> None:
    maybe_initialize_distributed()
    import jax
    from test_loader import make_split

    from pclr_jax.data.device_prefetch import DevicePrefetcher
    from pclr_jax.data.device_resident import DeviceResidentPairLoader
    from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader, to_global_batch

    split = make_split([2, 3, 4, 1, 2, 5, 1, 2, 3, 2] * 4 + [2, 3, 2, 4, 2], duplicated={0, 3})
    mesh = make_mesh()
    config = PairLoaderConfig(batch_pairs=16, seed=3)
    single_host = make_pair_loader(split, config, 0, 1)
    half = PairLoaderConfig(batch_pairs=16, seed=3, views_dtype="float16")
    local = make_pair_loader(split, half, jax.process_index(), jax.process_count())
    feeds = [
        DeviceResidentPairLoader(split, config, mesh),
        DevicePrefetcher(local, lambda batch: to_global_batch(batch, mesh)),
    ]
    for _ in range(6):  # 96 pairs: epoch boundaries inside batches
        expected = next(single_host)
        for feed in feeds:
            batch = next(feed)
            for key in ("view_a", "view_b", "patient_id"):
                gathered = multihost_utils.process_allgather(batch[key], tiled=True)
                gathered = np.asarray(gathered).reshape(expected[key].shape)  # lane-dense views
                np.testing.assert_array_equal(gathered, expected[key], err_msg=key)
    for feed in feeds:
        assert feed.get_state() == b'{"next_index": 6}'
        feed.close()
    print("feeds agree", jax.process_index(), file=sys.stderr)


if __name__ == "__main__":
    main()
