"""The parts of an embedding run on disk: what makes a run resumable.

An unfinished run keeps its work in ``<output>.parts/`` beside the output:

* ``run.json``: the settings the run was started with (weights, preparation, batch size, part
  size, a digest of the inputs, ...). A run started on a folder that holds one continues it only
  with equal settings; otherwise it stops, naming the settings that differ.
* ``part-00000012.parquet``: the rows of part 12 (:data:`PART_COLUMNS`): every record of its
  positions, embedded or rejected, and the checks ``--allow`` let through. A part file is written
  under a temporary name and renamed, so one that exists is complete: the parts present are the
  work done, whatever killed the run and when.

Once every part exists the output tables are assembled from them
(:mod:`pclr_jax.embedding.assemble`) and the folder is removed.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pclr_jax.embedding.reading import Failure

RUN_FILE = "run.json"
PART_PATTERN = re.compile(r"^part-(\d{8})\.parquet$")
EMBEDDED, REJECTED, ALLOWED = "embedded", "rejected", "allowed"
# Columns of a part file. ``embedding`` (a list of float32, the embedding's width) is null except
# for embedded rows; ``path``, ``reason`` and ``message`` are empty for them.
PART_COLUMNS = ("position", "kind", "sample_id", "path", "reason", "message", "embedding")


class SettingsMismatch(ValueError):
    """The parts folder belongs to a run started with other settings."""


def parts_directory(output: str | os.PathLike) -> pathlib.Path:
    """Where the run writing ``output`` keeps its parts: ``<output>.parts``."""
    output = pathlib.Path(output)
    return output.with_name(output.name + ".parts")


SCHEMA = pa.schema(
    [
        pa.field("position", pa.int64()),
        *(pa.field(name, pa.string()) for name in PART_COLUMNS[1:6]),
        pa.field("embedding", pa.list_(pa.float32())),
    ]
)


def part_table(
    positions: np.ndarray,
    sample_ids: Sequence[str],
    embeddings: np.ndarray,
    rejected: Sequence[Failure],
    allowed: Sequence[Failure],
) -> pa.Table:
    """One part's rows: embedded records (``positions`` ``(k,)``, ``embeddings`` ``(k, dim)``
    float32), then the rejected ones, then the allowed checks, each in position order."""
    n, dim = embeddings.shape
    values = pa.array(np.ascontiguousarray(embeddings, np.float32).reshape(-1))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim)
    embedded = pa.table(
        {
            "position": pa.array(positions, pa.int64()),
            "kind": pa.array([EMBEDDED] * n, pa.string()),
            "sample_id": pa.array(list(sample_ids), pa.string()),
            "path": pa.array([""] * n, pa.string()),
            "reason": pa.array([""] * n, pa.string()),
            "message": pa.array([""] * n, pa.string()),
            "embedding": pa.ListArray.from_arrays(offsets, values),
        },
        schema=SCHEMA,
    )
    tables = [embedded]
    for kind, failures in ((REJECTED, rejected), (ALLOWED, allowed)):
        columns = {name: [getattr(f, name) for f in failures] for name in Failure._fields}
        columns.update(kind=[kind] * len(failures), embedding=[None] * len(failures))
        tables.append(pa.table(columns, schema=SCHEMA))
    return pa.concat_tables(tables)


class PartStore:
    """The parts folder of one run (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)

    def path(self, part: int) -> pathlib.Path:
        return self.directory / f"part-{part:08d}.parquet"

    def done(self) -> set[int]:
        """The parts already written."""
        if not self.directory.is_dir():
            return set()
        return {
            int(match.group(1))
            for name in os.listdir(self.directory)
            if (match := PART_PATTERN.match(name))
        }

    def write(self, part: int, table: pa.Table) -> None:
        """Writes part ``part`` under a temporary name, then renames it into place."""
        final = self.path(part)
        temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, final)

    def read(self, part: int, columns: Sequence[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(part), columns=list(columns) if columns else None)

    def start(self, settings: dict, create: bool = True) -> bool:
        """Starts a run with ``settings`` (JSON-able) or continues the one in the folder.

        Returns whether a run was there to continue; without one, writes ``run.json`` only if
        ``create``. Raises :class:`SettingsMismatch` naming the settings that differ.
        """
        settings = json.loads(json.dumps(settings))
        run_file = self.directory / RUN_FILE
        if run_file.exists():
            found = json.loads(run_file.read_text())
            if found != settings:
                keys = sorted(k for k in {*found, *settings} if found.get(k) != settings.get(k))
                differences = "; ".join(
                    f"{k}: {found.get(k)!r} then, {settings.get(k)!r} now" for k in keys
                )
                raise SettingsMismatch(
                    f"{self.directory} holds an unfinished run started with other settings "
                    f"({differences}); rerun with the same settings to continue it, or delete "
                    "the folder to start over"
                )
            return True
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = run_file.with_name(f".{RUN_FILE}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
            os.replace(temporary, run_file)
        return False

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
