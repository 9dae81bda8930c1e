"""Test set-up: the CPU platform with 8 faked devices (set before JAX is imported), shared fixtures.

The suite runs on the CPU even where ``jax[cuda]`` or a TPU runtime is installed: its references
(hand-computed values, tf.keras and PyTorch on the CPU) and tolerances are for float32 on the CPU,
and its multi-device tests fake 8 CPU devices. ``PCLR_TEST_PLATFORM=gpu`` (or ``tpu``, any
``JAX_PLATFORMS`` value) runs it on that platform instead, for device checks that are asked for.
"""

import os
import pathlib

os.environ["JAX_PLATFORMS"] = os.environ.get("PCLR_TEST_PLATFORM", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest  # noqa: E402

TEST_DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def test_data_dir() -> pathlib.Path:
    """``tests/data``: the small real ECG files the suite ships (see its README)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def tiny_synthetic_data_dir(tmp_path_factory) -> pathlib.Path:
    """A tfds data dir holding ``pclr_synthetic/tiny`` (the smoke config's data), prepared once
    per session for every test that trains on it."""
    directory = tmp_path_factory.mktemp("tfds")
    from pclr_jax.data.builders import BUILDERS

    BUILDERS["pclr_synthetic"](config="tiny", data_dir=str(directory)).download_and_prepare()
    return directory


def pytest_collection_modifyitems(items):
    """Long work first: tests marked ``slow`` start the session, the rest keep their order behind
    them. Under ``pytest -n 2 --dist loadfile`` (run.sh) the two workers then share the modules
    with long tests from the start and the short ones fill in, instead of one long module being
    reached late and running on alone while the other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable sort
