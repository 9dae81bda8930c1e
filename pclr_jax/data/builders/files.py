"""The base of builders that read a user's copy of a collection from ``manual_dir``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from etils import epath

from pclr_jax.data import ingest
from pclr_jax.data.builders.base import ECGBuilder

SEX_CODES = {"0": 0, "1": 1, "m": 0, "male": 0, "f": 1, "female": 1}


class FileECGBuilder(ECGBuilder):
    """An :class:`ECGBuilder` whose manifest rows are files: each row has a ``format``
    (``'wfdb'``, ``'hdf5'``, ``'npy'``) and the columns :mod:`pclr_jax.data.record_tasks` reads;
    records are read and resampled by ``workers`` processes, ``CHUNK_SIZE`` records per job."""

    CHUNK_SIZE: ClassVar[int] = 16

    def _iter_outcomes(self, tasks: list[dict[str, Any]]) -> Iterator[ingest.Outcome]:
        # Imported here: registering the builders needs no record readers (wfdb, scipy).
        from pclr_jax.data import record_tasks

        return record_tasks.iter_outcomes(
            record_tasks.read_task,
            self.builder_config.spec,
            tasks,
            self._workers,
            self.CHUNK_SIZE,
        )

    def _manual_dir(self, dl_manager) -> epath.Path:
        """``manual_dir`` (tfds has checked that it exists)."""
        return epath.Path(dl_manager.manual_dir)


def require_file(directory: epath.Path, name: str, what: str) -> epath.Path:
    """``directory / name``, or FileNotFoundError saying what the file is for."""
    path = directory / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {what}")
    return path


def read_csv(path: epath.Path, **kwargs: Any) -> pd.DataFrame:
    with path.open("r") as f:
        return pd.read_csv(f, **kwargs)


def parse_sex(column: pd.Series) -> pd.Series:
    """0 male / 1 female / -1 unknown from 0/1, M/F or male/female (any case)."""
    text = column.map(lambda v: "" if pd.isna(v) else str(v).strip().lower().removesuffix(".0"))
    return text.map(SEX_CODES).fillna(-1).astype(np.int64)


def joined(root: epath.Path, relative: pd.Series) -> pd.Series:
    """Absolute paths ``root / relative`` as strings."""
    base = os.fspath(root)
    return relative.astype(str).map(lambda p: os.path.join(base, p))
