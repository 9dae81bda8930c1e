"""ECG files as the source of an embedding run: one entry per input file.

:class:`FileSource` takes the entries of :func:`~pclr_jax.signals.records.input_files` and counts
their records up front (:func:`~pclr_jax.signals.records.count_records`: an array file is opened
for its shape, nothing else is read), so that every record has its position before any is read.
A :class:`FileReader` reads rows of one entry, in a reader process or in this one.

Imports neither JAX nor pyarrow, so reader processes start quickly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from pclr_jax.signals.records import (
    ArrayOptions,
    ECGRecord,
    ECGValidationError,
    InputFile,
    count_records,
    read_input_file,
)


@dataclasses.dataclass(frozen=True)
class FileReader:
    """Reads one input file's records (an :class:`~pclr_jax.embedding.reading.EntryReader`).

    Attributes:
        file: the entry.
        options: how array files are read.
        hdf5_dataset: the HDF5 dataset or group to read (``None``: the default one).
        by_row: whether the file is read by array rows (else as a whole: one record or failure).
    """

    file: InputFile
    options: ArrayOptions
    hdf5_dataset: str | None
    by_row: bool

    @property
    def sample_id(self) -> str:
        return self.file.sample_id

    @property
    def path(self) -> str:
        return self.file.path

    def read(self, start: int, stop: int) -> Iterator[ECGRecord | ECGValidationError]:
        """Records ``start .. stop - 1`` (rows of an array file; ``0 .. 1`` otherwise)."""
        rows = range(start, stop) if self.by_row else None
        return read_input_file(self.file, self.options, self.hdf5_dataset, rows)


class FileSource:
    """The input files of a run, their record counts and readers.

    Attributes:
        counts: ``(files,)`` int64, records per file (0 for an empty array file).
        empty: the files that hold no ECG (an array with 0 rows): counted on screen, not
            records.
    """

    def __init__(
        self,
        files: Sequence[InputFile],
        options: ArrayOptions | None = None,
        hdf5_dataset: str | None = None,
    ):
        self.files = list(files)
        self.options = options or ArrayOptions()
        self.hdf5_dataset = hdf5_dataset
        counted = [count_records(f, self.options, hdf5_dataset) for f in self.files]
        self.counts = np.array([n for n, _ in counted], np.int64)
        self._by_row = [by_row for _, by_row in counted]
        self.empty = [f.path for f, n in zip(self.files, self.counts, strict=True) if n == 0]

    def reader(self, entry: int) -> FileReader:
        """The reader of file ``entry``."""
        return FileReader(self.files[entry], self.options, self.hdf5_dataset, self._by_row[entry])

    def fingerprint(self) -> dict:
        """What a resumed run must find unchanged: the reading options, and a digest of every
        file's kind, sample id, record count, size and modification time (a WFDB record's
        header's), but not where the files are (moving them keeps the ids)."""
        digest = hashlib.sha256()
        for item, count in zip(self.files, self.counts, strict=True):
            path = item.path + ".hea" if item.kind == "wfdb" else item.path
            try:
                stat = os.stat(path)
                changed = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                changed = None
            line = [item.kind, item.sample_id, int(count), changed]
            digest.update(json.dumps(line).encode() + b"\n")
        return {
            "kind": "files",
            "files": len(self.files),
            "files_sha256": digest.hexdigest(),
            "array_options": dataclasses.asdict(self.options),
            "hdf5_dataset": self.hdf5_dataset,
        }
