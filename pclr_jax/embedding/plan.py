"""Where each record of an embedding run sits: positions, parts and chunks.

A source (files, or a prepared split) is a list of *entries*, each giving a known number of
records (a WFDB record 1, an array file its ECGs, an empty file 0). The records of all entries,
in order, are numbered ``0 .. n_records - 1``: their *positions*, which fix the order of the
output whatever runs them. A *part* is ``part_records`` consecutive positions: the unit written to
disk, resumed after a kill, and handed to a process or a Beam worker. A *chunk* is up to
``chunk_records`` consecutive positions of one part: the unit a reader process prepares.

Imports neither JAX nor pyarrow, so reader processes start quickly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

# Positions per part by default: what a killed run loses at most, and the unit of work of a
# process or a Beam worker (1,024 embeddings of 320 float32 are 1.3 MB).
PART_RECORDS = 1024


@dataclasses.dataclass(frozen=True)
class Span:
    """Records ``start .. stop - 1`` of entry ``entry`` (counted within the entry)."""

    entry: int
    start: int
    stop: int


class Plan:
    """Positions over entries, cut into parts.

    Args:
        counts: records per entry (``(entries,)`` non-negative integers).
        part_records: positions per part (the last part may hold fewer).
    """

    def __init__(self, counts: Sequence[int], part_records: int):
        if part_records < 1:
            raise ValueError(f"part_records must be positive, got {part_records}")
        self.counts = np.asarray(counts, np.int64)
        if (self.counts < 0).any():
            raise ValueError("record counts must be non-negative")
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])  # (entries + 1,)
        self.n_records = int(self.starts[-1])
        self.part_records = int(part_records)
        self.n_parts = -(-self.n_records // self.part_records)

    def part_positions(self, part: int) -> range:
        """The positions of part ``part``."""
        if not 0 <= part < self.n_parts:
            raise IndexError(f"part {part} of {self.n_parts}")
        start = part * self.part_records
        return range(start, min(start + self.part_records, self.n_records))

    def chunks(self, part: int, chunk_records: int) -> list[range]:
        """Part ``part``'s positions in consecutive ranges of at most ``chunk_records``."""
        positions = self.part_positions(part)
        return [
            range(start, min(start + chunk_records, positions.stop))
            for start in range(positions.start, positions.stop, chunk_records)
        ]

    def spans(self, positions: range) -> list[Span]:
        """The pieces of entries that hold ``positions`` (consecutive), in order."""
        spans = []
        entry = int(np.searchsorted(self.starts, positions.start, side="right")) - 1
        while entry < len(self.counts) and self.starts[entry] < positions.stop:
            first = int(self.starts[entry])
            start = max(positions.start, first) - first
            stop = min(positions.stop, int(self.starts[entry + 1])) - first
            if stop > start:
                spans.append(Span(entry, start, stop))
            entry += 1
        return spans

    def entries_of(self, positions: np.ndarray) -> np.ndarray:
        """The entry holding each position (``positions`` and the result: ``(k,)`` int64)."""
        return np.searchsorted(self.starts, positions, side="right") - 1
