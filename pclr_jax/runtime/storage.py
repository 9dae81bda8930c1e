"""Where a run's files live: local folders or remote ones (gs://, s3://) via ``etils.epath``.

A multi-host run needs a workdir that every host sees (a bucket, NFS, Lustre): Orbax writes its
checkpoints from process 0 and every process reads them back on resume, and the data-loader state
of each process lands in the same checkpoint. :func:`check_shared` proves this at start-up, and
:func:`check_visible_everywhere` that a prepared data set is readable on every host, so a host
without the files fails at once with a message, in every process, rather than hanging its peers.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import tempfile
from collections.abc import Callable

import jax
import numpy as np
from etils import epath


def as_path(path: str | os.PathLike) -> epath.Path:
    """``path`` as an ``epath.Path``: remote URLs stay URLs, local paths become absolute."""
    text = os.fspath(path)
    return epath.Path(text) if is_remote(text) else epath.Path(os.path.abspath(text))


def is_remote(path: str | os.PathLike) -> bool:
    """True for URL-style paths (``gs://bucket/x``), which local-file libraries cannot open."""
    return "://" in os.fspath(path)


def write_through_local_file(path: epath.Path, write: Callable[[pathlib.Path], object]) -> None:
    """Calls ``write(local_path)`` and puts the file at ``path`` (copied there when remote), for
    writers that need a real file (h5py, matplotlib, parquet)."""
    if not is_remote(path):
        write(pathlib.Path(path))
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = pathlib.Path(tmp) / path.name
        write(local)
        epath.Path(local).copy(path, overwrite=True)


def flags_of_all_processes(flag: bool) -> np.ndarray:
    """Every process's ``flag``, in process order: ``(process_count,)`` bool. Collective: all
    processes must call it (a single process gets ``[flag]``)."""
    if jax.process_count() == 1:
        return np.array([flag])
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.int32(flag))).astype(bool)


def check_shared(directory: epath.Path) -> None:
    """Raises ``RuntimeError`` in every process unless all processes see ``directory`` as one.

    Process 0 writes a marker file with a fresh name; every other process must find it. A no-op
    for a single process. Collective: every process must call it.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    token = int(multihost_utils.broadcast_one_to_all(np.int64(secrets.randbits(62))))
    marker = directory / f".pclr-shared-check-{token:x}"
    if jax.process_index() == 0:
        marker.write_text("written by process 0 to check that every process sees this folder\n")
    multihost_utils.sync_global_devices("pclr shared-directory marker written")
    seen = flags_of_all_processes(marker.exists())
    multihost_utils.sync_global_devices("pclr shared-directory marker checked")
    if jax.process_index() == 0:
        marker.unlink()
    if not seen.all():
        raise RuntimeError(
            f"processes {np.flatnonzero(~seen).tolist()} do not see the workdir {directory} "
            "that process 0 writes: a multi-host run needs a workdir on storage every host "
            "shares (a gs:// or s3:// bucket, NFS, Lustre), given as the same path on every host"
        )


def check_visible_everywhere(ready: bool, what: str, fix: str) -> None:
    """Raises ``RuntimeError`` in every process when ``ready`` is false in any process.

    ``what`` names the missing thing, ``fix`` says what to do. Collective: all processes must
    call it.
    """
    seen = flags_of_all_processes(ready)
    if not seen.all():
        raise RuntimeError(
            f"{what} is missing on processes {np.flatnonzero(~seen).tolist()}: {fix}"
        )
