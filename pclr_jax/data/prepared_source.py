"""A split of a prepared data set as the source of an embedding run (``pclr embed --data``).

One entry, the split: record ``i`` is example ``i`` of the ``array_record`` source, named by the
index's ``record_id``. Its ECG (``(n_samples, 12)`` float16 mV, the standard leads, ``duration_s``
of the source resampled to ``n_samples`` at prepare time) becomes an
:class:`~pclr_jax.signals.records.ECGRecord` at ``n_samples / duration_s`` Hz, which ``pclr
embed`` prepares for the model like any record (a model with another input length resamples it).

A :class:`PreparedReader` opens the split in the process that reads (once per process), so it
travels to reader processes as a few strings.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import numpy as np

from pclr_jax.data.prepared import PreparedSplit, load_prepared
from pclr_jax.signals.leads import STANDARD_LEADS
from pclr_jax.signals.records import ECGRecord, ECGValidationError

# A prepared ECG covers this many seconds when the data set's report does not say (the default of
# every builder).
DEFAULT_DURATION_S = 10.0


@functools.lru_cache(maxsize=2)
def _open(name: str, split: str, data_dir: str, config: str | None, version: str | None):
    return load_prepared(name, split, data_dir, config, version)


def _duration_s(prepared: PreparedSplit) -> float:
    return float(prepared.report.get("duration_s") or DEFAULT_DURATION_S)


@dataclasses.dataclass(frozen=True)
class PreparedReader:
    """Reads examples of one prepared split (an
    :class:`~pclr_jax.embedding.reading.EntryReader`)."""

    name: str
    split: str
    data_dir: str
    config: str | None = None
    version: str | None = None

    @property
    def sample_id(self) -> str:
        return f"{self.name}/{self.split}"

    @property
    def path(self) -> str:
        return self.sample_id

    def read(self, start: int, stop: int) -> Iterator[ECGRecord | ECGValidationError]:
        """Examples ``start .. stop - 1`` as records named by the index's ``record_id``."""
        prepared = _open(self.name, self.split, self.data_dir, self.config, self.version)
        rate = prepared.n_samples / _duration_s(prepared)
        ids = prepared.index["record_id"]
        for i in range(start, min(stop, len(prepared))):
            ecg = np.asarray(prepared.source[i]["ecg"], np.float32)
            yield ECGRecord(str(ids.iloc[i]), ecg, STANDARD_LEADS, rate, "mV", self.path)


class PreparedSource:
    """A prepared split, for :func:`~pclr_jax.embedding.to_table.embed_to_table`.

    Raises what :func:`~pclr_jax.data.prepared.load_prepared` raises (nothing prepared there, no
    such split, an index that does not match its shards).
    """

    empty: tuple[str, ...] = ()

    def __init__(self, reader: PreparedReader):
        self._reader = reader
        self._prepared = _open(reader.name, reader.split, reader.data_dir, reader.config,
                               reader.version)  # fmt: skip
        self.counts = np.array([len(self._prepared)], np.int64)

    def reader(self, entry: int) -> PreparedReader:
        if entry != 0:
            raise IndexError(f"a prepared split is one entry, not {entry + 1}")
        return self._reader

    def fingerprint(self) -> dict:
        """The split's identity: where it is, its size and first and last ids."""
        ids = self._prepared.index["record_id"]
        return {
            "kind": "prepared",
            "directory": self._prepared.directory,
            "split": self._reader.split,
            "records": len(ids),
            "ids": [str(ids.iloc[0]), str(ids.iloc[-1])] if len(ids) else [],
            "report": self._prepared.report,
        }
