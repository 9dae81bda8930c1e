"""Patient-pair loader: pairing, epochs, determinism, host sharding, resumption, eval batches."""

import itertools
import math
from types import SimpleNamespace

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pandas as pd
import pytest
from jax.sharding import Mesh, PartitionSpec

from pclr_jax.data import pairing
from pclr_jax.data.loader import (
    PairLoaderConfig,
    iter_eval_batches,
    make_pair_loader,
    to_global_batch,
)

SAMPLES, LEADS = 64, 12
NOISE = {"gaussian_noise": {"probability": 0.5, "std_mv": 0.1}, "time_warp": {"probability": 0.5}}


def make_split(ecgs_per_patient, duplicated=(), seed=0):
    """An in-memory prepared split: a list of dicts plus its index.

    ``ecgs_per_patient[i]`` distinct ECGs for patient ``P{i}``; each patient in ``duplicated`` also
    gets a second copy of its first ECG (same ``ecg_group``). Rows are shuffled so that a
    patient's records are not adjacent.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for patient, count in enumerate(ecgs_per_patient):
        for ecg in range(count):
            group = f"P{patient}-E{ecg}"
            rows.append((f"{group}-c0", f"P{patient:03d}", group))
            if ecg == 0 and patient in duplicated:
                rows.append((f"{group}-c1", f"P{patient:03d}", group))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    index = pd.DataFrame(rows, columns=["record_id", "patient_id", "ecg_group"])
    ecgs = rng.standard_normal((len(rows), SAMPLES, LEADS)).astype(np.float16)
    source = [
        {"ecg": ecgs[i], "record_id": rows[i][0], "patient_id": rows[i][1]}
        for i in range(len(rows))
    ]
    return SimpleNamespace(source=source, index=index)


@pytest.fixture(scope="module")
def split():
    """48 patients: 37 (a prime) with >= 2 distinct ECGs, 11 with one (two of them with a copy of
    it); 119 records."""
    counts = [2, 3, 4, 1, 2, 5, 1, 2, 3, 2] * 4 + [2, 3, 2, 4, 2] + [1] * 3
    return make_split(counts, duplicated={0, 3, 6})


def record_rows(split):
    return {rid: row for row, rid in enumerate(split.index["record_id"])}


def take(loader, n):
    return [next(loader) for _ in range(n)]


def assert_batches_equal(first, second):
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def concatenate(batches):
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


# --- pairing: pure functions --------------------------------------------------------------------


def test_patient_table_counts_single_ecg_patients_and_groups_copies(split):
    table = pairing.build_patient_table(split.index)
    index = split.index
    distinct = index.groupby("patient_id")["ecg_group"].nunique()
    assert table.n_patients == len(distinct) == 48
    assert table.single_ecg_patients == int((distinct == 1).sum()) == 11
    single_records = index["patient_id"].isin(distinct.index[distinct == 1]).sum()
    assert table.single_ecg_records == single_records == 13
    assert table.n_pairable == 37
    assert set(table.patient_ids) == set(distinct.index[distinct >= 2])
    augmented = pairing.build_patient_table(index, "augment")
    assert augmented.n_pairable == 48
    assert augmented.summary()["single_ecg_mode"] == "augment"


def test_ecg_group_shared_by_two_patients_is_an_error():
    index = pd.DataFrame(
        {"record_id": ["a", "b", "c"], "patient_id": ["x", "y", "y"], "ecg_group": [1, 1, 2]}
    )
    with pytest.raises(ValueError, match="ecg_group 1 is shared by patients"):
        pairing.build_patient_table(index)


def test_rows_without_ecg_group_are_ecgs_of_their_own():
    index = pd.DataFrame(
        {
            "record_id": list("abcde"),
            "patient_id": ["x", "x", "y", "y", "z"],
            "ecg_group": [None, None, "g", "g", None],
        }
    )
    table = pairing.build_patient_table(index)
    assert list(table.patient_ids) == ["x"]  # y has two copies of one ECG, z one ECG
    assert (table.single_ecg_patients, table.single_ecg_records) == (2, 3)
    np.testing.assert_array_equal(np.sort(table.rows), [0, 1])


@pytest.mark.parametrize("n", range(4, 41))
def test_no_patient_twice_in_a_batch_across_epoch_boundaries(n):
    for batch in range(1, n + 1):
        if n < 2 * batch - math.gcd(n, batch):
            with pytest.raises(ValueError, match="pairable patients cannot fill"):
                pairing.check_batch_size(n, batch)
            continue
        epochs = [pairing.epoch_order(n, batch, 5, e) for e in range(8)]
        for order in epochs:
            np.testing.assert_array_equal(np.sort(order), np.arange(n))
        stream = np.concatenate(epochs)
        batches = stream[: len(stream) // batch * batch].reshape(-1, batch)
        assert all(len(set(b)) == batch for b in batches), (n, batch)


def test_epoch_orders_are_seeded_permutations_that_differ_between_epochs():
    first = [pairing.epoch_order(100, 16, 1, e) for e in range(3)]
    again = [pairing.epoch_order(100, 16, 1, e) for e in range(3)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], pairing.epoch_order(100, 16, 2, 0))


def test_pair_choice_is_uniform_over_ordered_distinct_ecgs_and_copies():
    # One patient: ECG groups g0 (rows 0, 1: two copies), g1 (row 2), g2 (row 3).
    index = pd.DataFrame(
        {"record_id": list("abcd"), "patient_id": ["p"] * 4, "ecg_group": [0, 0, 1, 2]}
    )
    table = pairing.build_patient_table(index)
    group_of = np.array([0, 0, 1, 2])
    draws = np.array([[r[0] for r in pairing.epoch_pairs(table, 0, e)] for e in range(3000)])
    groups = group_of[draws]
    assert np.all(groups[:, 0] != groups[:, 1])
    ordered = pd.Series([tuple(g) for g in groups]).value_counts(normalize=True)
    assert len(ordered) == 6
    np.testing.assert_allclose(ordered.to_numpy(), 1 / 6, atol=0.025)  # standard error 0.007
    copies = draws[groups == 0]
    assert np.mean(copies == 0) == pytest.approx(0.5, abs=0.04)


# --- the grain loader ---------------------------------------------------------------------------


def test_pairs_are_distinct_ecgs_of_one_patient_with_the_source_data(split):
    rows = record_rows(split)
    patients = sorted(split.index["patient_id"].unique())
    loader = make_pair_loader(split, PairLoaderConfig(batch_pairs=8, seed=3), 0, 1)
    for batch in take(loader, 14):  # three epochs of 37 pairs
        assert batch["view_a"].shape == (8, SAMPLES, LEADS) and batch["view_a"].dtype == np.float32
        assert batch["patient_id"].dtype == np.int32
        for k in range(8):
            row_a, row_b = rows[batch["record_id_a"][k]], rows[batch["record_id_b"][k]]
            assert row_a != row_b
            a, b = split.index.iloc[row_a], split.index.iloc[row_b]
            assert a.patient_id == b.patient_id == patients[batch["patient_id"][k]]
            assert a.ecg_group != b.ecg_group
            np.testing.assert_array_equal(batch["view_a"][k], split.source[row_a]["ecg"])
            np.testing.assert_array_equal(batch["view_b"][k], split.source[row_b]["ecg"])


def test_every_multi_ecg_patient_once_per_epoch_and_once_per_batch(split):
    table = pairing.build_patient_table(split.index)
    n = table.n_pairable  # 37, prime: every epoch boundary falls inside a batch
    loader = make_pair_loader(split, PairLoaderConfig(batch_pairs=8, seed=0), 0, 1)
    batches = take(loader, 5 * n // 8)
    for batch in batches:
        assert len(set(batch["patient_id"])) == 8
    stream = np.concatenate([b["patient_id"] for b in batches])
    for epoch in range(4):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == sorted(table.patient_index)
    assert not np.array_equal(stream[:n], stream[n : 2 * n])  # reshuffled


def test_single_ecg_patients_excluded_by_default(split):
    table = pairing.build_patient_table(split.index)
    single = set(range(table.n_patients)) - set(table.patient_index)
    assert len(single) == 11
    loader = make_pair_loader(split, PairLoaderConfig(batch_pairs=8), 0, 1)
    seen = np.concatenate([b["patient_id"] for b in take(loader, 10)])
    assert not single & set(seen)


def test_augment_switch_pairs_single_ecg_patients_with_an_augmented_copy(split):
    with pytest.raises(ValueError, match="switch on at least one augmentation"):
        PairLoaderConfig(batch_pairs=8, single_ecg_patients="augment")
    rows = record_rows(split)
    distinct = split.index.groupby("patient_id")["ecg_group"].nunique()
    single_records = set(split.index["record_id"][split.index["patient_id"].map(distinct) == 1])
    config = PairLoaderConfig(
        batch_pairs=8,
        single_ecg_patients="augment",
        augmentations={"gaussian_noise": {"probability": 0.01}},
    )
    same = []
    for batch in take(make_pair_loader(split, config, 0, 1), 6):  # epoch 0: all 48 patients
        for k in np.flatnonzero(batch["record_id_a"] == batch["record_id_b"]):
            record = batch["record_id_a"][k]
            same.append(record)
            source = split.source[rows[record]]["ecg"]
            # the copy is always augmented (forced); the first view only at p = 0.01
            assert not np.array_equal(batch["view_b"][k], source)
    assert set(same) <= single_records
    assert len(same) == 11


def test_same_seed_same_batches_other_seed_other_batches(split):
    config = PairLoaderConfig(batch_pairs=8, seed=11, augmentations=NOISE)
    first = take(make_pair_loader(split, config, 0, 1), 6)
    second = take(make_pair_loader(split, config, 0, 1), 6)
    for a, b in zip(first, second, strict=True):
        assert_batches_equal(a, b)
    other = next(make_pair_loader(split, PairLoaderConfig(batch_pairs=8, seed=12), 0, 1))
    assert not np.array_equal(other["patient_id"], first[0]["patient_id"])


@pytest.mark.parametrize("augmentations", [{}, NOISE])
def test_two_hosts_concatenate_to_the_single_host_batch(split, augmentations):
    config = PairLoaderConfig(batch_pairs=8, seed=4, augmentations=augmentations)
    single = take(make_pair_loader(split, config, 0, 1), 7)
    hosts = [take(make_pair_loader(split, config, i, 2), 7) for i in range(2)]
    for j in range(7):
        assert hosts[0][j]["view_a"].shape[0] == 4
        assert_batches_equal(concatenate([hosts[0][j], hosts[1][j]]), single[j])


def test_set_state_resumes_on_exactly_the_next_batch(split):
    config = PairLoaderConfig(batch_pairs=8, seed=2, augmentations=NOISE)
    loader = make_pair_loader(split, config, 0, 1)
    take(loader, 4)  # batch 4 straddles epochs 0 and 1 (positions 32..39, 37 per epoch)
    state = loader.get_state()
    expected = take(loader, 3)
    resumed = make_pair_loader(split, config, 0, 1)
    resumed.set_state(state)
    for a, b in zip(expected, take(resumed, 3), strict=True):
        assert_batches_equal(a, b)


def test_orbax_checkpoint_round_trip_resumes_on_the_next_batch(split, tmp_path):
    config = PairLoaderConfig(batch_pairs=8, seed=9)
    loader = make_pair_loader(split, config, 0, 1)
    take(loader, 3)
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=True)
    with ocp.CheckpointManager(
        tmp_path / "ckpt", options=options, item_names=("loader",)
    ) as manager:
        manager.save(3, args=ocp.args.Composite(loader=grain.checkpoint.CheckpointSave(loader)))
        expected = take(loader, 2)  # while the asynchronous save may still be running
        manager.wait_until_finished()
    resumed = make_pair_loader(split, config, 0, 1)
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("loader",)) as manager:
        manager.restore(
            manager.latest_step(),
            args=ocp.args.Composite(loader=grain.checkpoint.CheckpointRestore(resumed)),
        )
    for a, b in zip(expected, take(resumed, 2), strict=True):
        assert_batches_equal(a, b)


def test_finite_epochs_drop_only_the_final_partial_batch(split):
    loader = make_pair_loader(split, PairLoaderConfig(batch_pairs=8, num_epochs=2), 0, 1)
    assert len(list(loader)) == 2 * 37 // 8


def test_worker_processes_give_the_in_process_batches(split):
    config = PairLoaderConfig(batch_pairs=8, seed=6, augmentations=NOISE)
    in_process = take(make_pair_loader(split, config, 0, 1), 3)
    workers = PairLoaderConfig(batch_pairs=8, seed=6, augmentations=NOISE, worker_count=1)
    loader = make_pair_loader(split, workers, 0, 1)
    try:
        for a, b in zip(in_process, take(loader, 3), strict=True):
            assert b["view_a"].dtype == np.float32
            # batches cross the process boundary as float16
            np.testing.assert_array_equal(a["view_a"].astype(np.float16), b["view_a"])
            np.testing.assert_array_equal(a["record_id_b"], b["record_id_b"])
    finally:
        loader.close()


def test_bad_inputs_are_named(split):
    with pytest.raises(ValueError, match="pairable patients cannot fill"):
        make_pair_loader(split, PairLoaderConfig(batch_pairs=30), 0, 1)
    with pytest.raises(ValueError, match="does not divide over 3 processes"):
        make_pair_loader(split, PairLoaderConfig(batch_pairs=8), 0, 3)
    swapped = SimpleNamespace(source=split.source[::-1], index=split.index)
    loader = make_pair_loader(swapped, PairLoaderConfig(batch_pairs=8), 0, 1)
    with pytest.raises(ValueError, match=r"source\[\d+\] is record 'P\d+-E\d-c\d' but the index"):
        next(loader)


def test_to_global_batch_shards_over_eight_devices(split):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    local = next(make_pair_loader(split, PairLoaderConfig(batch_pairs=16), 0, 1))
    batch = to_global_batch(local, mesh)
    assert set(batch) == {"view_a", "view_b", "patient_id"}
    # lane-dense on the devices: 64 x 12 values per ECG as 6 x 128 (pclr_jax/runtime/layout.py)
    assert batch["view_a"].shape == (16, SAMPLES * LEADS // 128, 128)
    assert batch["patient_id"].dtype == np.int32
    for value in batch.values():
        assert value.sharding.spec == PartitionSpec("data")
        assert len(value.addressable_shards) == 8
        assert value.addressable_shards[1].data.shape[0] == 2
    view_b = np.asarray(batch["view_b"]).reshape(local["view_b"].shape)
    np.testing.assert_array_equal(view_b, local["view_b"])


# --- evaluation batches -------------------------------------------------------------------------


def test_eval_batches_cover_every_record_in_index_order(split):
    n = len(split.index)  # 119 records
    batches = list(iter_eval_batches(split, 32))
    assert len(batches) == 4
    last = batches[-1]
    assert last["mask"].sum() == n - 96 and not last["mask"][n - 96 :].any()
    assert np.all(last["ecg"][n - 96 :] == 0) and np.all(last["row"][n - 96 :] == -1)
    ecg = np.concatenate([b["ecg"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(ecg, np.stack([item["ecg"] for item in split.source]))
    record_ids = np.concatenate([b["record_id"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(record_ids, split.index["record_id"].to_numpy())
    assert list(itertools.chain.from_iterable(b["row"][b["mask"]] for b in batches)) == list(
        range(n)
    )


# --- a real prepared data set (tfds array_record) -----------------------------------------------


@pytest.fixture(scope="module")
def prepared_tiny(tmp_path_factory):
    from pclr_jax.data.builders.pclr_synthetic import PclrSynthetic
    from pclr_jax.data.prepared import load_prepared

    data_dir = tmp_path_factory.mktemp("tfds")
    PclrSynthetic(config="tiny", data_dir=str(data_dir), workers=0).download_and_prepare()
    return load_prepared("pclr_synthetic", "train", data_dir, config="tiny")


def test_loader_on_a_prepared_split_pairs_patients_and_resumes(prepared_tiny):
    index = prepared_tiny.index
    rows = {rid: row for row, rid in enumerate(index["record_id"])}
    patients = sorted(index["patient_id"].unique())
    config = PairLoaderConfig(batch_pairs=8, seed=1, augmentations=NOISE)
    loader = make_pair_loader(prepared_tiny, config, 0, 1)
    batches = take(loader, 4)
    for batch in batches:
        assert batch["view_a"].shape == (8, 256, 12) and batch["view_a"].dtype == np.float32
        assert len(set(batch["patient_id"])) == 8
        for k in range(8):
            a, b = (
                index.iloc[rows[batch["record_id_a"][k]]],
                index.iloc[rows[batch["record_id_b"][k]]],
            )
            assert a.patient_id == b.patient_id == patients[batch["patient_id"][k]]
            assert a.ecg_group != b.ecg_group
    plain = next(make_pair_loader(prepared_tiny, PairLoaderConfig(batch_pairs=8, seed=1), 0, 1))
    row = rows[plain["record_id_b"][0]]
    stored = prepared_tiny.source[row]["ecg"]
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(plain["view_b"][0], stored.astype(np.float32))
    state = loader.get_state()
    expected = next(loader)
    resumed = make_pair_loader(prepared_tiny, config, 0, 1)
    resumed.set_state(state)
    assert_batches_equal(expected, next(resumed))


def test_eval_batches_on_a_prepared_split(prepared_tiny):
    batches = list(iter_eval_batches(prepared_tiny, 16))
    record_ids = np.concatenate([b["record_id"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(record_ids, prepared_tiny.index["record_id"].to_numpy())
    last = len(prepared_tiny.index) - 1
    np.testing.assert_array_equal(
        np.concatenate([b["ecg"][b["mask"]] for b in batches])[last],
        prepared_tiny.source[last]["ecg"].astype(np.float32),
    )
