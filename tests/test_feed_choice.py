"""loader.mode='auto' and loader.worker_count=-1: the feed chosen per backend, as a pure function
of the backend, the split's size, the devices' memory, augmentations and the host's cores."""

from pclr_jax.training.feed_choice import choose_feed

GB = 10**9
PTBXL = 21_837 * 4096 * 12 * 2  # float16, 2.1 GB
MIMIC = 800_000 * 4096 * 12 * 2  # 79 GB


def test_cpus_read_in_process_with_threads():
    choice = choose_feed("cpu", PTBXL, 8, None, augmented=False, host_cores=2)
    assert (choice.mode, choice.worker_count) == ("host", 0)
    assert choose_feed("cpu", PTBXL, 1, None, False, host_cores=64).worker_count == 0


def test_accelerators_hold_a_split_that_fits_and_read_with_workers_otherwise():
    h100 = 80 * GB
    assert choose_feed("gpu", PTBXL, 8, h100, False, host_cores=112).mode == "device_resident"
    assert choose_feed("gpu", MIMIC, 8, h100, False, 112).mode == "device_resident"  # 9.8 GB each
    v5e = 16 * GB
    assert choose_feed("tpu", MIMIC, 8, v5e, False, 112).mode == "host"  # 9.8 GB > half of 16
    assert choose_feed("tpu", MIMIC, 16, v5e, False, 112).mode == "device_resident"
    too_big = choose_feed("gpu", MIMIC, 1, h100, False, host_cores=14)
    assert (too_big.mode, too_big.worker_count) == ("host", 12)  # all cores but 2
    unknown = choose_feed("gpu", PTBXL, 8, None, False, host_cores=14)
    assert (unknown.mode, unknown.worker_count) == ("host", 12)
    assert choose_feed("gpu", MIMIC, 1, h100, False, host_cores=2).worker_count == 0


def test_augmentations_keep_the_host_feed():
    choice = choose_feed("gpu", PTBXL, 8, 80 * GB, augmented=True, host_cores=16)
    assert (choice.mode, choice.worker_count) == ("host", 14)
    assert "augmentations" in choice.reason
