"""Device prefetch: the host loader's batches on the mesh ahead of use, float16 on the devices (no
float32 copy: the step casts), and a state that counts only consumed batches (resume and Orbax
checkpoints stay exact)."""

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, PartitionSpec
from test_loader import make_split

from pclr_jax.data.device_prefetch import DevicePrefetcher
from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader, to_global_batch


@pytest.fixture(scope="module")
def split():
    return make_split([2, 3, 4, 1, 2, 5, 1, 2, 3, 2] * 4 + [2, 3, 2, 4, 2])


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()), ("data",))


def prefetcher(split, mesh, seed=0, buffer_size=2, views_dtype="float16"):
    config = PairLoaderConfig(batch_pairs=8, seed=seed, views_dtype=views_dtype)
    return DevicePrefetcher(
        make_pair_loader(split, config, 0, 1),
        lambda batch: to_global_batch(batch, mesh),
        buffer_size,
    )


def reference_batches(split, mesh, n, seed=0):
    """The plain path: float32 host batches placed synchronously."""
    loader = make_pair_loader(split, PairLoaderConfig(batch_pairs=8, seed=seed), 0, 1)
    return [jax.device_get(to_global_batch(next(loader), mesh)) for _ in range(n)]


def test_float16_loader_views_are_the_stored_values(split):
    half = next(make_pair_loader(split, PairLoaderConfig(batch_pairs=8, views_dtype="float16")))
    full = next(make_pair_loader(split, PairLoaderConfig(batch_pairs=8)))
    assert half["view_a"].dtype == np.float16 and full["view_a"].dtype == np.float32
    np.testing.assert_array_equal(half["view_a"].astype(np.float32), full["view_a"])
    with pytest.raises(ValueError, match="views_dtype='bfloat16'"):
        PairLoaderConfig(batch_pairs=8, views_dtype="bfloat16")


def test_prefetched_batches_equal_the_plain_path_as_float16_on_the_mesh(split, mesh):
    expected = reference_batches(split, mesh, 6)
    feed = prefetcher(split, mesh, buffer_size=3)
    for reference in expected:
        batch = next(feed)
        assert batch["view_a"].dtype == batch["view_b"].dtype == np.float16
        # lane-dense: each 64 x 12 ECG as 6 x 128, no minor dimension of 12 (runtime/layout.py)
        assert batch["view_a"].shape == batch["view_b"].shape == (8, 6, 128)
        for key, value in batch.items():
            assert value.sharding.spec == PartitionSpec("data")
            np.testing.assert_array_equal(np.asarray(value), reference[key], err_msg=key)
    feed.close()


def test_state_counts_consumed_batches_not_prefetched_ones(split, mesh, tmp_path):
    expected = reference_batches(split, mesh, 7, seed=4)
    feed = prefetcher(split, mesh, seed=4, buffer_size=3)
    for _ in range(3):
        next(feed)
    next(feed)  # the reading thread is now up to 3 batches ahead
    assert feed.get_state() == b'{"next_index": 4}'
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("loader",)) as manager:
        manager.save(4, args=ocp.args.Composite(loader=grain.checkpoint.CheckpointSave(feed)))
    feed.close()
    # The bare grain loader restores from that checkpoint too (the same file and content).
    for resumed in (
        prefetcher(split, mesh, seed=4),
        make_pair_loader(split, PairLoaderConfig(batch_pairs=8, seed=4), 0, 1),
    ):
        with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("loader",)) as manager:
            manager.restore(
                4, args=ocp.args.Composite(loader=grain.checkpoint.CheckpointRestore(resumed))
            )
        for reference in expected[4:]:
            batch = next(resumed)
            view_a = np.asarray(batch["view_a"]).reshape(reference["view_a"].shape)
            np.testing.assert_array_equal(view_a, reference["view_a"])
            np.testing.assert_array_equal(np.asarray(batch["patient_id"]), reference["patient_id"])
        resumed.close()


def test_set_state_drops_the_batches_read_ahead(split, mesh):
    expected = reference_batches(split, mesh, 5)
    feed = prefetcher(split, mesh, buffer_size=2)
    next(feed)
    state = feed.get_state()
    for _ in range(3):
        next(feed)
    feed.set_state(state)
    for reference in expected[1:]:
        np.testing.assert_array_equal(np.asarray(next(feed)["view_b"]), reference["view_b"])
    feed.close()


def test_a_bad_record_is_raised_by_the_consumer(split, mesh):
    from types import SimpleNamespace

    swapped = SimpleNamespace(source=split.source[::-1], index=split.index)
    feed = prefetcher(swapped, mesh)
    with pytest.raises(ValueError, match=r"source\[\d+\] is record '.+' but the index"):
        next(feed)
    with pytest.raises(ValueError, match="buffer_size=0"):
        DevicePrefetcher(iter([]), lambda batch: batch, 0)
