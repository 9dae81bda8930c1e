"""Test set-up: 8 faked CPU devices (set before JAX is imported) and shared fixtures."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest  # noqa: E402

TEST_DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def test_data_dir() -> pathlib.Path:
    """``tests/data``: the small real ECG files the suite ships (see its README)."""
    return TEST_DATA
