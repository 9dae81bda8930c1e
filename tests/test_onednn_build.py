"""Finding and caching the oneDNN extension (pclr_jax/model/onednn_build.py) and the fallback when
it cannot be had: no compile here (the compiler and oneDNN are faked away), so this runs with and
without the ``cpu-onednn`` extra."""

import importlib.metadata

import pytest

from pclr_jax.model import conv, onednn_build, onednn_conv


def test_cache_key_names_onednn_jax_and_the_source(monkeypatch, tmp_path):
    key = onednn_build.cache_key("2023.2.0")
    assert key.startswith("onednn2023.2.0-jax") and "jaxlib" in key
    assert onednn_build.cache_key("2023.2.0") == key  # deterministic
    assert onednn_build.cache_key("2024.0.0") != key
    source = tmp_path / "onednn_conv.cc"
    source.write_text(onednn_build.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(onednn_build, "SOURCE", source)
    assert onednn_build.cache_key("2023.2.0") != key  # a changed source is rebuilt


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(onednn_build.CACHE_ENV, str(tmp_path / "c"))
    assert onednn_build.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(onednn_build.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert onednn_build.cache_dir() == tmp_path / "pclr_jax" / "onednn_conv"


def test_missing_onednn_names_the_extra(monkeypatch):
    monkeypatch.delenv(onednn_build.LIB_ENV, raising=False)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(onednn_build.OnednnUnavailable, match=r"cpu-onednn"):
        onednn_build.library()


def test_missing_compiler_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler-pclr")
    with pytest.raises(onednn_build.OnednnUnavailable, match="no C..? compiler"):
        onednn_build._compiler()


def test_explicit_library_path_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(onednn_build.LIB_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(onednn_build.OnednnUnavailable, match="does not exist"):
        onednn_build.library()
    assert onednn_build.main([]) == 1  # the build command reports it and fails


def test_unavailable_extension_auto_falls_back_and_onednn_raises(monkeypatch):
    """Where the extension cannot be loaded: "auto" silently takes the XLA formulation even where
    oneDNN would be picked, and an explicit "onednn" raises, naming the reason and the fix."""
    reason = onednn_build.OnednnUnavailable("oneDNN is not installed: pip install ...cpu-onednn")
    monkeypatch.setattr(onednn_conv, "_load", lambda: reason)
    monkeypatch.setattr(conv, "cpu_class", lambda: "avx512_amx")
    assert onednn_conv.available() == (False, f"conv_impl='onednn' is unavailable: {reason}")
    for train in (True, False):
        expected = conv.AUTO_IMPL["cpu"][0 if train else 1]
        assert conv.resolve_impl("auto", train, "cpu", "bfloat16") == expected
    with pytest.raises(onednn_build.OnednnUnavailable, match="unavailable: oneDNN is not install"):
        conv.resolve_impl("onednn", backend="cpu")
    with pytest.raises(ValueError, match="CPU backend only"):
        conv.resolve_impl("onednn", backend="gpu")


@pytest.mark.parametrize("loads", [True, False])
@pytest.mark.parametrize("cpu", ["avx512_amx", "avx512", "avx2", "other"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("train", [True, False])
def test_auto_follows_the_cpu_table(monkeypatch, loads, cpu, dtype, train):
    """ "auto" on the CPU backend: CPU_AUTO's choice for (CPU class, dtype) in training or
    inference, "onednn" only where the extension loads; else AUTO_IMPL's formulation; other
    backends never read the table."""
    reason = onednn_build.OnednnUnavailable("not installed")
    monkeypatch.setattr(onednn_conv, "_load", (lambda: object()) if loads else (lambda: reason))
    monkeypatch.setattr(conv, "cpu_class", lambda: cpu)
    choice = conv.CPU_AUTO.get((cpu, dtype), (None, None))[0 if train else 1]
    xla = conv.AUTO_IMPL["cpu"][0 if train else 1]
    expected = choice if choice == "dft" or (choice == "onednn" and loads) else xla
    assert conv.resolve_impl("auto", train, "cpu", dtype) == expected
    assert conv.resolve_impl("auto", train, "gpu", dtype) == conv.AUTO_IMPL["gpu"][0]
    measured_faster = {
        ("avx512_amx", "bfloat16"): ("onednn", "onednn"),
        ("avx512_amx", "float32"): ("onednn", "onednn"),
        ("avx512", "float32"): ("dft", "dft"),
        ("avx512", "bfloat16"): ("dft", "dft"),
    }
    assert conv.CPU_AUTO == measured_faster


def test_cpu_class_reads_this_cpu():
    assert conv.cpu_class() in ("avx512_amx", "avx512", "avx2", "other")


def test_bench_offers_every_conv_impl():
    """``pclr bench --conv-impl`` spells the choices out (no JAX import for ``--help``)."""
    from pclr_jax.commands import bench

    assert bench.CONV_IMPLS == conv.CONV_IMPLS
