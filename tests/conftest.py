"""Test set-up: the platform and its devices (set before JAX is imported), shared fixtures.

The suite runs on the CPU even where ``jax[cuda]`` or a TPU runtime is installed: its references
(hand-computed values, tf.keras and PyTorch on the CPU) and tolerances are for float32 on the CPU,
and its multi-device tests fake 8 CPU devices (``--xla_force_host_platform_device_count=8`` is
appended to ``XLA_FLAGS`` unless a device count is already there).

``PCLR_TEST_PLATFORM=gpu`` (or ``tpu``, any ``JAX_PLATFORMS`` value) runs it on that platform
instead, for the device checks that are asked for (``pytest -m device_check``, what
``benchmarks/accelerator_check.sh`` runs). Off the CPU, float32 matrix products and convolutions
that ask for no precision run at full float32 (``JAX_DEFAULT_MATMUL_PRECISION=highest``, unless
set): the tolerances are float32's, not TF32's or one bf16 pass's. A test marked
``devices(n)`` is skipped, with the reason, where the platform has fewer than ``n`` devices.
"""

import os
import pathlib
import tempfile

PLATFORM = os.environ.get("PCLR_TEST_PLATFORM", "cpu")
os.environ["JAX_PLATFORMS"] = PLATFORM
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ["XLA_FLAGS"] = flags.strip()
if PLATFORM != "cpu":
    os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest  # noqa: E402

TEST_DATA = pathlib.Path(__file__).parent / "data"
# The system temp directory as the session found it (the controller's, before it is redirected).
SYSTEM_TMP = pathlib.Path(os.environ.get("PCLR_SYSTEM_TMP", tempfile.gettempdir()))


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


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has made its factory
def pytest_configure(config):
    """Every temporary file of the session under pytest's base temp: ``TMPDIR`` (inherited by the
    xdist workers and every subprocess a test starts: train.py runs, Beam, tfds, jax.distributed
    workers) and ``tempfile.tempdir`` point at ``<basetemp>/system-tmp``. On the controller the
    system temp directory's entries are recorded, to be compared at the end of the session."""
    if hasattr(config, "workerinput") or "PCLR_SYSTEM_TMP" in os.environ:
        return  # an xdist worker, or a session a test started: the outer session checks
    basetemp = config._tmp_path_factory.getbasetemp()
    redirected = basetemp / "system-tmp"
    redirected.mkdir(exist_ok=True)
    os.environ["PCLR_SYSTEM_TMP"] = str(SYSTEM_TMP)
    os.environ["TMPDIR"] = str(redirected)
    tempfile.tempdir = str(redirected)
    config.stash[_SYSTEM_TMP_BEFORE] = _entries(SYSTEM_TMP, basetemp)


_SYSTEM_TMP_BEFORE = pytest.StashKey[set]()


def _entries(directory: pathlib.Path, basetemp: pathlib.Path) -> set[str]:
    """The names in ``directory``, less the folder holding pytest's own base temp."""
    names = {entry.name for entry in directory.iterdir()}
    if basetemp.parent.parent == directory:  # <tmp>/pytest-of-USER/pytest-N
        names.discard(basetemp.parent.name)
    if basetemp.parent == directory:  # --basetemp=<tmp>/NAME
        names.discard(basetemp.name)
    return names


def pytest_sessionfinish(session):
    """Fails the session when the system temp directory holds entries it did not hold before:
    every test's files belong under pytest's tmp_path."""
    config = session.config
    if hasattr(config, "workerinput") or _SYSTEM_TMP_BEFORE not in config.stash:
        return
    basetemp = config._tmp_path_factory.getbasetemp()
    new = sorted(_entries(SYSTEM_TMP, basetemp) - config.stash[_SYSTEM_TMP_BEFORE])
    if new:
        print(f"\nthe suite left {len(new)} new entries in {SYSTEM_TMP}: {new[:20]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_runtest_setup(item):
    """Skips a test marked ``devices(n)`` where the platform has fewer than ``n`` devices."""
    marker = item.get_closest_marker("devices")
    if marker is None:
        return
    import jax

    needed, count = marker.args[0], jax.device_count()
    if count < needed:
        pytest.skip(f"needs {needed} devices; {PLATFORM} has {count}")


@pytest.fixture
def xla_auto(monkeypatch):
    """What "auto" is without the CPU-class table: AUTO_IMPL's XLA formulations. For tests of
    XLA's own convolutions (their precision, FLOPs, formulations): CPU_AUTO may send a CPU class's
    convolutions to "dft" or oneDNN (tests/test_onednn_build.py tests that choice)."""
    from pclr_jax.model import conv

    monkeypatch.setattr(conv, "CPU_AUTO", {})
