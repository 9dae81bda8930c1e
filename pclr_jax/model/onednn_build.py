"""Builds, caches and finds the shared library of the oneDNN convolution custom call.

The C++ source (``onednn_conv.cc`` beside this file, shipped in the package) is compiled on first
use, the way ``torch.utils.cpp_extension.load`` does, into a cache directory keyed by everything
the binary depends on: the source and compiler flags (a SHA-256), the jax/jaxlib version (the XLA
FFI headers it includes) and the oneDNN version (the library it links). A second process finds the
library there; a concurrent one waits on a file lock instead of compiling twice. Nothing is built
at ``pip install`` time (``docs/speed_cpu.md#the-onednn-path`` says why).

Needs the ``cpu-onednn`` extra (``pip install 'pclr-jax[cpu-onednn]'``: the ``onednn-cpu-gomp``
library and ``onednn-devel-cpu-gomp`` headers, 2023.2) and a C++17 compiler (``$CXX``, default
``g++``); compiling takes a few seconds (4 s on a 2-core Xeon). Explicitly, once (prints the
library's path)::

    python -m pclr_jax.model.onednn_build [--force]

Environment: ``PCLR_ONEDNN_CONV_LIB`` names a library built elsewhere (used as is, never
compiled); ``PCLR_ONEDNN_CACHE`` the cache directory (default
``$XDG_CACHE_HOME/pclr_jax/onednn_conv``, i.e. ``~/.cache/pclr_jax/onednn_conv``).

Every failure (oneDNN not installed, no compiler, a compile error) raises
:class:`OnednnUnavailable` with the reason and the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

LIB_ENV = "PCLR_ONEDNN_CONV_LIB"
CACHE_ENV = "PCLR_ONEDNN_CACHE"
SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
LIBRARY_NAME = "libpclr_onednn_conv.so"
# The registry's oneDNN: the runtime (libdnnl.so.3, OpenMP through the system's libgomp) and its
# headers. The `onednn` 2026.x wheels are SYCL/TBB builds and do not load without Intel's runtimes.
ONEDNN_DIST, ONEDNN_DEVEL_DIST = "onednn-cpu-gomp", "onednn-devel-cpu-gomp"
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-Wall")
INSTALL_HINT = "pip install 'pclr-jax[cpu-onednn]' (or, in a clone, pip install -e '.[cpu-onednn]')"

log = logging.getLogger(__name__)


class OnednnUnavailable(RuntimeError):
    """The oneDNN convolution custom call cannot be used here; the message says why and how to
    fix it."""


def _file_of(dist: str, name: str) -> pathlib.Path:
    """The installed file of distribution ``dist`` whose path ends with ``name``."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError as error:
        raise OnednnUnavailable(
            f"oneDNN is not installed ({dist} missing): {INSTALL_HINT}"
        ) from error
    for file in files:
        if str(file).replace("\\", "/").endswith(name):
            return pathlib.Path(file.locate()).resolve()
    raise OnednnUnavailable(f"{dist} has no {name}: reinstall it ({INSTALL_HINT})")


def onednn() -> dict[str, str]:
    """The installed oneDNN: ``version``, ``lib_dir`` (``libdnnl.so.3``), ``include_dir``."""
    lib = _file_of(ONEDNN_DIST, "libdnnl.so.3")
    header = _file_of(ONEDNN_DEVEL_DIST, "oneapi/dnnl/dnnl.hpp")
    return {
        "version": importlib.metadata.version(ONEDNN_DIST),
        "lib_dir": str(lib.parent),
        "include_dir": str(header.parents[2]),
    }


def _jax_versions() -> str:
    import jax
    import jaxlib

    return f"jax{jax.__version__}-jaxlib{jaxlib.__version__}"


def cache_key(onednn_version: str) -> str:
    """``onednn<version>-jax<v>-jaxlib<v>-<12 hex of SHA-256(source, flags)>``."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:12]
    return f"onednn{onednn_version}-{_jax_versions()}-{digest}"


def cache_dir() -> pathlib.Path:
    """The cache's root (``PCLR_ONEDNN_CACHE``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "pclr_jax" / "onednn_conv"


def _compiler() -> str:
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise OnednnUnavailable(
            f"no C++ compiler ({name!r} not found; set $CXX, or e.g. apt-get install g++) to "
            "build the oneDNN convolution extension"
        )
    return path


@contextlib.contextmanager
def _locked(directory: pathlib.Path):
    """An exclusive lock on ``directory/.lock`` (one compile at a time across processes)."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compile(target: pathlib.Path, found: dict[str, str]) -> None:
    import jax

    compiler = _compiler()
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as tmp:
        partial = pathlib.Path(tmp.name)
    command = [
        compiler,
        *FLAGS,
        "-isystem",
        jax.ffi.include_dir(),
        "-isystem",
        found["include_dir"],
        str(SOURCE),
        "-o",
        str(partial),
        f"-L{found['lib_dir']}",
        "-l:libdnnl.so.3",
        f"-Wl,-rpath,{found['lib_dir']}",
    ]
    log.warning("compiling the oneDNN convolution extension (once) into %s", target.parent)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        partial.unlink(missing_ok=True)
        raise OnednnUnavailable(
            f"compiling {SOURCE.name} failed ({' '.join(command)}):\n{done.stderr[-4000:]}"
        )
    os.replace(partial, target)  # atomic: a reader never sees half a library


def library(build: bool = True, force: bool = False) -> pathlib.Path:
    """The shared library's path: ``PCLR_ONEDNN_CONV_LIB`` if set, else the cached build for this
    source, jax and oneDNN, compiled now if missing (``build``) or if ``force``."""
    if os.environ.get(LIB_ENV):
        path = pathlib.Path(os.environ[LIB_ENV])
        if not path.exists():
            raise OnednnUnavailable(f"{LIB_ENV}={path} does not exist")
        return path
    found = onednn()
    directory = cache_dir() / cache_key(found["version"])
    target = directory / LIBRARY_NAME
    if target.exists() and not force:
        return target
    if not build:
        raise OnednnUnavailable(f"{target} is not built: python -m {__name__}")
    with _locked(directory):
        if force or not target.exists():  # another process may have built it meanwhile
            _compile(target, found)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="recompile even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = library(build=True, force=args.force)
    except OnednnUnavailable as error:
        print(f"oneDNN convolution extension unavailable: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
