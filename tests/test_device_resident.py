"""Device-resident pairs: the split on the mesh (replicated or sharded), pairs gathered there,
against the host loader (``pairing.py`` + grain) and against PCLR's pairing rules checked from
the gathered ECGs; the sharded exchange's bytes per device, read from the compiled program."""

import json
import re

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from test_loader import make_split

from pclr_jax.benchmarking.communication import collective_bytes
from pclr_jax.data.device_resident import (
    DeviceResidentPairLoader,
    choose_placement,
    default_capacity,
    load_split_to_devices,
    make_exchange,
    make_local_gather,
)
from pclr_jax.data.loader import PairLoaderConfig, make_pair_loader


@pytest.fixture(scope="module")
def split():
    """As test_loader's: 37 pairable patients (prime), 11 single-ECG ones, copies sharing an
    ecg_group; 119 records, not a multiple of 8 devices."""
    counts = [2, 3, 4, 1, 2, 5, 1, 2, 3, 2] * 4 + [2, 3, 2, 4, 2] + [1] * 3
    return make_split(counts, duplicated={0, 3, 6})


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8
    return Mesh(np.array(jax.devices()), ("data",))


def row_of(split):
    """ECG bytes -> index row: identifies a gathered view by its content alone."""
    table = {split.source[row]["ecg"].tobytes(): row for row in range(len(split.index))}
    assert len(table) == len(split.index)
    return lambda view: table[np.asarray(view).astype(np.float16).tobytes()]


def test_split_is_sharded_by_rows_and_padded_with_zeros(split, mesh):
    ecgs = load_split_to_devices(split, mesh)
    # 119 padded to 8 x 15; each 64 x 12 ECG lane-dense as 6 x 128 (pclr_jax.runtime.layout)
    assert ecgs.shape == (120, 6, 128) and ecgs.dtype == np.float16
    assert ecgs.sharding.spec == PartitionSpec("data")
    shard = ecgs.addressable_shards[3]
    assert shard.index[0] == slice(45, 60)
    np.testing.assert_array_equal(shard.data[0].reshape(64, 12), split.source[45]["ecg"])
    np.testing.assert_array_equal(np.asarray(ecgs[119]), 0)


@pytest.mark.parametrize(
    "placement, capacity",
    [("replicated", None), ("sharded", None), ("sharded", 1)],  # capacity 1: several rounds
)
def test_batches_equal_the_host_loaders_across_epochs(split, mesh, placement, capacity):
    config = PairLoaderConfig(batch_pairs=16, seed=3)
    host = make_pair_loader(split, config, 0, 1)
    device = DeviceResidentPairLoader(split, config, mesh, placement, capacity)
    assert device.placement == placement
    for _ in range(12):  # 192 pairs: five epochs of 37, every boundary inside a batch
        expected, batch = next(host), next(device)
        for key in ("view_a", "view_b", "patient_id"):
            assert batch[key].sharding.spec == PartitionSpec("data")
            got = np.asarray(batch[key]).reshape(expected[key].shape)
            np.testing.assert_array_equal(got, expected[key], err_msg=key)
        assert batch["view_a"].dtype == np.float16  # as stored: the step casts


def test_pairing_rules_hold_for_the_gathered_ecgs(split, mesh):
    """Checked from the index alone: two distinct ECGs (ecg_groups) of one patient, never two
    copies of a recording, each patient at most once per global batch, every pairable patient
    once per epoch."""
    row = row_of(split)
    index = split.index
    patients = sorted(index["patient_id"].unique())
    groups = index.groupby("patient_id")["ecg_group"].nunique()
    pairable = sorted(groups.index[groups >= 2])
    loader = DeviceResidentPairLoader(split, PairLoaderConfig(batch_pairs=8, seed=5), mesh)
    stream = []
    for _ in range(14):  # three epochs of 37
        batch = jax.device_get(next(loader))
        assert len(set(batch["patient_id"])) == 8
        for k in range(8):
            a, b = index.iloc[row(batch["view_a"][k])], index.iloc[row(batch["view_b"][k])]
            assert a.patient_id == b.patient_id == patients[batch["patient_id"][k]]
            assert a.ecg_group != b.ecg_group
            stream.append(a.patient_id)
    for epoch in range(3):
        assert sorted(stream[epoch * 37 : (epoch + 1) * 37]) == pairable


def test_deterministic_per_seed(split, mesh):
    def first_batches(seed):
        loader = DeviceResidentPairLoader(split, PairLoaderConfig(batch_pairs=8, seed=seed), mesh)
        return [jax.device_get(next(loader)) for _ in range(3)]

    first, again, other = first_batches(2), first_batches(2), first_batches(9)
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(first[0]["patient_id"], other[0]["patient_id"])


def test_state_resumes_on_the_next_batch_in_the_host_loaders_format(split, mesh):
    config = PairLoaderConfig(batch_pairs=8, seed=1)
    loader = DeviceResidentPairLoader(split, config, mesh)
    reference = [jax.device_get(next(loader)) for _ in range(7)]
    resumed = DeviceResidentPairLoader(split, config, mesh)
    for _ in range(2):
        next(resumed)
    state = DeviceResidentPairLoader(split, config, mesh)
    [next(state) for _ in range(4)]
    assert json.loads(state.get_state()) == {"next_index": 4}
    host = make_pair_loader(split, config, 0, 1)
    [next(host) for _ in range(4)]
    assert json.loads(state.get_state()) == host.get_state()
    resumed.set_state(state.get_state())
    for expected in reference[4:]:
        got = jax.device_get(next(resumed))
        np.testing.assert_array_equal(got["view_b"], expected["view_b"])
        np.testing.assert_array_equal(got["patient_id"], expected["patient_id"])


def test_finite_epochs_and_refused_settings(split, mesh):
    loader = DeviceResidentPairLoader(split, PairLoaderConfig(batch_pairs=8, num_epochs=1), mesh)
    assert len(list(loader)) == 37 // 8
    with pytest.raises(ValueError, match="no augmentations"):
        DeviceResidentPairLoader(
            split,
            PairLoaderConfig(batch_pairs=8, augmentations={"gaussian_noise": {"probability": 1}}),
            mesh,
        )
    with pytest.raises(ValueError, match="must divide over 8"):
        DeviceResidentPairLoader(split, PairLoaderConfig(batch_pairs=12), mesh)


def _exchanged_bytes(devices: int, local_pairs: int) -> int:
    """All-to-all bytes per device of one round of the sharded exchange, compiled for
    ``devices`` devices, ``local_pairs`` pairs per device and the default bucket capacity."""
    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    capacity = default_capacity(local_pairs, devices)
    ecgs = jax.ShapeDtypeStruct((devices * 100, 6, 128), np.float16, sharding=sharded)
    plan = jax.ShapeDtypeStruct((devices, devices, capacity), np.int32, sharding=sharded)
    compiled = make_exchange(mesh, local_pairs, True, True).lower(ecgs, plan, plan).compile()
    measured = collective_bytes(compiled)
    assert {k for k, v in measured.items() if v["count"]} == {"all-to-all"}
    return measured["all-to-all"]["operand_bytes"]


def test_sharded_exchange_bytes_grow_with_the_local_batch_not_the_global_one():
    """One round sends ``devices x capacity`` rows per device, i.e. ``4 b`` rows of 64 x 12
    float16 for ``b`` local pairs at 2 and at 8 devices (the global batch 4 times larger). The
    first version sent both views' ``G`` rows: ``2 b x devices``, 4 times more at 8 devices."""
    row = 64 * 12 * 2
    for local_pairs in (2, 4, 8):
        for devices in (2, 8):
            assert _exchanged_bytes(devices, local_pairs) == 4 * local_pairs * row


def test_a_replicated_split_is_gathered_without_communication(split, mesh):
    ecgs = load_split_to_devices(split, mesh, "replicated")
    assert ecgs.shape == (119, 6, 128) and ecgs.sharding.is_fully_replicated
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    needed = jax.ShapeDtypeStruct((8 * 4,), np.int32, sharding=sharded)
    compiled = make_local_gather(mesh).lower(ecgs, needed).compile()
    assert all(entry["count"] == 0 for entry in collective_bytes(compiled).values())


def test_auto_placement_replicates_what_fits_a_quarter_of_a_device():
    assert choose_placement(2 * 10**9, 80 * 10**9) == "replicated"  # PTB-XL on an H100
    assert choose_placement(79 * 10**9, 80 * 10**9) == "sharded"  # MIMIC-IV-ECG
    assert choose_placement(10**6, None) == "sharded"  # memory unknown (CPU)


@pytest.mark.parametrize("placement", ["replicated", "sharded"])
def test_nothing_on_the_devices_has_a_minor_dimension_of_12(split, mesh, placement):
    """TPUs pad a minor dimension of 12 to 128 lanes (10.7x the bytes): the split, the batches
    and every array of the gather programs are lane-dense instead."""
    loader = DeviceResidentPairLoader(split, PairLoaderConfig(batch_pairs=16), mesh, placement)
    batch = next(loader)
    for array in (loader.ecgs, batch["view_a"], batch["view_b"]):
        assert array.shape[1:] == (6, 128)
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    if placement == "replicated":
        needed = jax.ShapeDtypeStruct((8 * 4,), np.int32, sharding=sharded)
        compiled = make_local_gather(mesh).lower(loader.ecgs, needed).compile()
    else:
        plan = jax.ShapeDtypeStruct((8, 8, loader.capacity), np.int32, sharding=sharded)
        compiled = make_exchange(mesh, 2, True, True).lower(loader.ecgs, plan, plan).compile()
    shapes = re.findall(r"\b[a-z]+\d*\[([\d,]*)\]", compiled.as_text())
    assert shapes and not [s for s in shapes if s.split(",")[-1] == "12"]
