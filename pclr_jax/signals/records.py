"""ECG records and the readers that produce them: WFDB, ``.npy`` and HDF5.

An :class:`ECGRecord` is one ECG as stored: ``signal`` ``(samples, leads)`` in its file's
``units``, the file's lead names and sampling rate. Nothing is resampled, reordered or validated
here beyond what is needed to read the file; :func:`pclr_jax.signals.preprocess.prepare_ecg` turns a
record into model input. A file that cannot be read raises (or, from :func:`iter_records`,
yields) an :class:`ECGValidationError` that names the record.

Supported inputs
----------------
* **WFDB** (read with ``wfdb.rdrecord``): a header path ``rec.hea``, the record path without
  extension ``rec``, or a folder searched recursively for ``*.hea``. Signals come back in physical
  units, one unit string per channel (``'mV'``, ``'uV'``, ``'V'``; an empty unit is the WFDB
  default, mV). Extra channels (PTB's Frank leads ``vx vy vz``) are kept; lead selection drops
  them later.
* **NumPy** ``.npy``: ``(N, samples, leads)`` (or one ECG ``(samples, leads)``) float array,
  assumed to hold the 12 standard leads in :data:`~pclr_jax.signals.leads.STANDARD_LEADS` order in
  mV
  unless ``lead_names``/``units`` say otherwise. A ``.npy`` file has no sampling rate: pass
  ``sampling_rate`` (Hz); by default every ECG is taken to last ``duration_s`` (10 s), i.e.
  ``sampling_rate = samples / 10``. Record ids are ``<file id>:<row>``.
* **HDF5** (read with h5py), two layouts:

  - *array*: one dataset ``(N, samples, leads)`` -- CODE-15%'s ``tracings`` (400 Hz, mV, leads
    in the standard order); ids come from a sibling ``exam_id`` dataset of length ``N`` when
    present (else ``<file stem>:<row>``);
  - *ml4h tensors*: a group (``tensors``) holding one ``(samples, leads)`` dataset per ECG, named
    by its sample id -- what ml4h's PCLR deployment ``prepare.py`` writes.

  Without ``dataset``, ``tracings`` is used if present, else ``tensors``, else the file's only 3-D
  dataset. Sampling rate, lead names and units as for ``.npy``.

Sample ids
----------
:func:`iter_records` names records so that the ids survive moving the data (see
:data:`SAMPLE_ID_MODES`): by default a record found in a folder input is named by its path
relative to that folder, without extension, and a file given by itself by its name. Two inputs
that would give the same id are an error before anything is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import h5py
import numpy as np

from pclr_jax.signals.leads import STANDARD_LEADS

WFDB_SUFFIXES = (".hea",)
NPY_SUFFIXES = (".npy",)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hd5")

# How sample ids are made from input paths (``pclr embed --sample-id``):
#   relative: a file found in a folder input: its path relative to that folder, without extension
#             (``records100/00000/00001_lr``); a file given by itself: its name without extension;
#   name:     the file name without extension, wherever the file was found (``00001_lr``);
#   path:     the path as typed or found, without extension (changes when the data move).
# Array files (.npy, HDF5 without ids) give ``<id>:<row>``; HDF5 ids from the file (``exam_id``,
# the ``tensors`` group's names) are kept as they are.
SAMPLE_ID_MODES = ("relative", "name", "path")

_MV_PER_UNIT = {"mv": 1.0, "": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}


class ECGValidationError(ValueError):
    """An ECG that cannot be used, with a machine-readable ``reason``.

    Attributes:
        record_id: the record's id; for a file that could not be read as a whole, the file's
            sample id (see :func:`input_files`), like the ids of the records it would have given.
        lead: the offending lead's standard name, or ``None`` for the whole record.
        source: the file involved, when known.
        reason: a short tag, e.g. ``'corrupt_file'``, ``'missing_file'``, ``'header_mismatch'``,
            ``'bad_shape'``, ``'missing_lead'``, ``'non_finite'``, ``'flat_lead'``, ``'too_short'``,
            ``'too_long'``, ``'units'``, ``'unsupported_file'``.
    """

    def __init__(
        self,
        message: str,
        *,
        record_id: str,
        reason: str,
        lead: str | None = None,
        source: str = "",
    ):
        if str(record_id) not in message:
            message = f"record {record_id}: {message}"
        super().__init__(message)
        self.record_id = str(record_id)
        self.reason = reason
        self.lead = lead
        self.source = source


@dataclasses.dataclass
class ECGRecord:
    """One ECG as read from its file.

    Attributes:
        record_id: unique id (the ``sample_id`` of ``pclr embed``'s output).
        signal: ``(samples, leads)`` float array in ``units``.
        lead_names: one name per column of ``signal``, as the file spells them.
        sampling_rate: samples per second (Hz).
        units: physical unit of ``signal``: ``'mV'``, ``'uV'`` or ``'V'`` (``''`` means mV).
        source: the file it came from.
    """

    record_id: str
    signal: np.ndarray
    lead_names: tuple[str, ...]
    sampling_rate: float
    units: str = "mV"
    source: str = ""


def millivolts_per_unit(unit: str | None) -> float:
    """Scale from ``unit`` to mV (``'uV'`` -> 1e-3); ``None``/``''`` is WFDB's default, mV.

    Raises ``KeyError`` for a unit that is not a voltage.
    """
    key = (unit or "").strip().lower().replace("micro", "u").replace("milli", "m")
    key = key.removesuffix("olts").removesuffix("olt")
    if key not in _MV_PER_UNIT:
        raise KeyError(unit)
    return _MV_PER_UNIT[key]


def _record_path(path: str | os.PathLike) -> str:
    """``rec.hea`` or ``rec`` -> ``rec`` (the form ``wfdb.rdrecord`` takes)."""
    path = os.fspath(path)
    return path[: -len(".hea")] if path.endswith(".hea") else path


def read_wfdb(path: str | os.PathLike, record_id: str | None = None) -> ECGRecord:
    """Reads one WFDB record (``rec.hea`` or ``rec``) in physical units.

    Channels with different units are each converted to mV (``units='mV'``); otherwise the
    file's unit is kept. ``record_id`` defaults to the record path without extension.
    Raises :class:`ECGValidationError`: ``'missing_file'`` (no header or data file),
    ``'corrupt_file'`` (unreadable header or truncated data), ``'header_mismatch'`` (the data
    do not have the samples and channels the header declares).
    """
    import wfdb

    record_path = _record_path(path)
    record_id = record_id or record_path
    if not os.path.exists(record_path + ".hea"):
        raise ECGValidationError(
            f"no WFDB header {record_path}.hea",
            source=record_path,
            record_id=record_id,
            reason="missing_file",
        )
    try:
        record = wfdb.rdrecord(record_path)
    except FileNotFoundError as error:
        raise ECGValidationError(
            f"missing data file: {error}",
            source=record_path,
            record_id=record_id,
            reason="missing_file",
        ) from error
    except (OSError, ValueError, EOFError, IndexError, KeyError, TypeError) as error:
        raise ECGValidationError(
            f"unreadable WFDB record {record_path}: {type(error).__name__}: {error}",
            record_id=record_id,
            source=record_path,
            reason="corrupt_file",
        ) from error
    signal = record.p_signal
    expected = (record.sig_len, record.n_sig)
    if signal is None or signal.shape != expected:
        shape = None if signal is None else signal.shape
        raise ECGValidationError(
            f"header declares {expected[0]} samples x {expected[1]} channels, data hold {shape}",
            record_id=record_id,
            source=record_path,
            reason="header_mismatch",
        )
    units = [u or "" for u in (record.units or [""] * record.n_sig)]
    unit = units[0] if len(set(units)) == 1 else "mV"
    if len(set(units)) > 1:
        try:
            scale = np.array([millivolts_per_unit(u) for u in units])
        except KeyError as error:
            raise ECGValidationError(
                f"unknown unit {error.args[0]!r} in {units}",
                source=record_path,
                record_id=record_id,
                reason="units",
            ) from error
        signal = signal * scale
    return ECGRecord(
        record_id=record_id,
        signal=signal,
        lead_names=tuple(record.sig_name),
        sampling_rate=float(record.fs),
        units=unit,
        source=record_path,
    )


def trim_zero_padding(signal: np.ndarray) -> np.ndarray:
    """``signal`` ``(samples, leads)`` without the all-zero samples at both ends (CODE-15% pads
    its 7 s and 10 s exams with zeros to 4,096 samples)."""
    active = np.flatnonzero(np.any(signal != 0, axis=1))
    return signal[active[0] : active[-1] + 1] if len(active) else signal[:0]


@dataclasses.dataclass(frozen=True)
class ArrayOptions:
    """How to interpret ECGs from array files (``.npy``, HDF5), which carry no metadata.

    Attributes:
        sampling_rate: Hz; ``None`` means each ECG lasts ``duration_s``.
        duration_s: assumed duration (s) when ``sampling_rate`` is ``None``.
        lead_names: the leads along the last axis, in order.
        units: unit of the values (``'mV'``, ``'uV'``, ``'V'``).
        trim_zero_padding: drop all-zero samples at both ends of each ECG first.
    """

    sampling_rate: float | None = None
    duration_s: float = 10.0
    lead_names: tuple[str, ...] = STANDARD_LEADS
    units: str = "mV"
    trim_zero_padding: bool = False

    def record(self, record_id: str, signal: np.ndarray, source: str) -> ECGRecord:
        """An :class:`ECGRecord` from one ``(samples, leads)`` array."""
        signal = np.asarray(signal, dtype=np.float64)
        if signal.ndim != 2 or signal.shape[1] != len(self.lead_names):
            raise ECGValidationError(
                f"expected (samples, {len(self.lead_names)} leads), got {signal.shape}",
                record_id=record_id,
                source=source,
                reason="bad_shape",
            )
        rate = self.sampling_rate or signal.shape[0] / self.duration_s
        if self.trim_zero_padding:
            signal = trim_zero_padding(signal)
        return ECGRecord(record_id, signal, tuple(self.lead_names), float(rate), self.units, source)


def _file_error(path: str, record_id: str, reason: str, message: str) -> ECGValidationError:
    return ECGValidationError(message, record_id=record_id, source=path, reason=reason)


def _read_error(path: str, record_id: str, error: Exception) -> ECGValidationError:
    message = f"unreadable file {path}: {type(error).__name__}: {error}"
    return _file_error(path, record_id, "corrupt_file", message)


# An opened array file: its number of ECGs and a function from a row to that row's record (or its
# failure); or the one failure that stands for the whole file.
ArrayRows = tuple[int, Callable[[int], "ECGRecord | ECGValidationError"]]


def _row_reader(
    path: str,
    record_id: Callable[[int], str],
    signal: Callable[[int], np.ndarray],
    options: ArrayOptions,
) -> Callable[[int], ECGRecord | ECGValidationError]:
    """``row -> record`` of an array file, or the row's failure (not raised)."""

    def read_row(row: int) -> ECGRecord | ECGValidationError:
        try:
            return options.record(record_id(row), signal(row), path)
        except ECGValidationError as error:
            return error
        except (OSError, ValueError, KeyError, TypeError) as error:
            return ECGValidationError(
                f"{path}: unreadable ECG: {type(error).__name__}: {error}",
                record_id=record_id(row),
                source=path,
                reason="corrupt_file",
            )

    return read_row


@contextlib.contextmanager
def _npy_rows(
    path: str, stem: str, options: ArrayOptions
) -> Iterator[ArrayRows | ECGValidationError]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        yield _read_error(path, stem, error)
        return
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        message = f"{path}: expected (N, samples, leads), got shape {array.shape}"
        yield _file_error(path, stem, "bad_shape", message)
        return
    yield array.shape[0], _row_reader(path, lambda row: f"{stem}:{row}", array.__getitem__, options)


def read_npy(path: str | os.PathLike, options: ArrayOptions | None = None) -> Iterator[ECGRecord]:
    """The ECGs of a ``.npy`` file ``(N, samples, leads)`` (see the module docstring).

    Raises :class:`ECGValidationError` (``'corrupt_file'``, ``'bad_shape'``) when reached.
    """
    path = os.fspath(path)
    for item in read_input_file(InputFile("npy", path, pathlib.Path(path).stem), options):
        if isinstance(item, ECGValidationError):
            raise item
        yield item


def _hdf5_ids(f: h5py.File, dataset: h5py.Dataset, stem: str) -> list[str]:
    n = dataset.shape[0]
    parent = dataset.parent
    if "exam_id" in parent and parent["exam_id"].shape == (n,):
        return [str(i) for i in parent["exam_id"][()]]
    return [f"{stem}:{row}" for row in range(n)]


def _default_hdf5_entry(f: h5py.File) -> str:
    for name in ("tracings", "tensors"):
        if name in f:
            return name
    arrays: list[str] = []
    f.visititems(
        lambda name, obj: (
            arrays.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None
        )
    )
    if len(arrays) != 1:
        raise KeyError(
            f"no 'tracings' dataset or 'tensors' group and {len(arrays)} 3-D datasets "
            f"({arrays[:5]}); pass the dataset name"
        )
    return arrays[0]


def _hdf5_entry_rows(
    path: str, entry: h5py.Group | h5py.Dataset, f: h5py.File, stem: str, options: ArrayOptions
) -> ArrayRows | ECGValidationError:
    if isinstance(entry, h5py.Group):
        names = list(entry)
        read = _row_reader(path, names.__getitem__, lambda row: entry[names[row]][()], options)
        return len(names), read
    if entry.ndim != 3:
        message = f"{path}: dataset {entry.name} has shape {entry.shape}, not (N, samples, leads)"
        return _file_error(path, stem, "bad_shape", message)
    ids = _hdf5_ids(f, entry, stem)
    return len(ids), _row_reader(path, ids.__getitem__, entry.__getitem__, options)


@contextlib.contextmanager
def _hdf5_rows(
    path: str, dataset: str | None, stem: str, options: ArrayOptions
) -> Iterator[ArrayRows | ECGValidationError]:
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        yield _read_error(path, stem, error)
        return
    with f:
        try:
            entry = f[dataset or _default_hdf5_entry(f)]
        except KeyError as error:
            yield _file_error(path, stem, "unsupported_file", f"{path}: {error.args[0]}")
            return
        yield _hdf5_entry_rows(path, entry, f, stem, options)


def read_hdf5(
    path: str | os.PathLike, dataset: str | None = None, options: ArrayOptions | None = None
) -> Iterator[ECGRecord]:
    """The ECGs of an HDF5 file, array or ml4h-tensors layout (see the module docstring).

    Raises :class:`ECGValidationError` (``'corrupt_file'``, ``'bad_shape'``,
    ``'unsupported_file'``) when reached.
    """
    path = os.fspath(path)
    entry = InputFile("hdf5", path, pathlib.Path(path).stem)
    for item in read_input_file(entry, options, dataset):
        if isinstance(item, ECGValidationError):
            raise item
        yield item


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One input found by :func:`input_files`.

    Attributes:
        kind: ``'wfdb'``, ``'npy'``, ``'hdf5'``, ``'missing'`` or ``'unsupported'``.
        path: the file (a WFDB record: its path without extension), as found from the input.
        sample_id: the record's id (WFDB), or the prefix of the ids ``<sample_id>:<row>`` of an
            array file's ECGs (see :data:`SAMPLE_ID_MODES`).
    """

    kind: str
    path: str
    sample_id: str


def _without_suffix(path: pathlib.PurePath, kind: str) -> pathlib.PurePath:
    return path if kind == "wfdb" else path.with_suffix("")


def _sample_id(kind: str, path: str, root: str | None, mode: str) -> str:
    """The id of a record path (WFDB) or array file for ``mode`` (see :data:`SAMPLE_ID_MODES`)."""
    found = _without_suffix(pathlib.Path(path), kind)
    if mode == "path":
        return str(found)
    if mode == "relative" and root is not None:
        return found.relative_to(root).as_posix()
    return found.name


def input_files(paths: Iterable[str | os.PathLike], sample_id: str = "relative") -> list[InputFile]:
    """The input files of ``paths`` (files, WFDB record paths without extension, or folders
    searched recursively, sorted) with their sample ids, in order.

    Raises:
        ValueError: an unknown ``sample_id`` mode, or two inputs that would give the same ids
            (the message names both and the modes that tell them apart).
    """
    if sample_id not in SAMPLE_ID_MODES:
        raise ValueError(f"sample_id must be one of {SAMPLE_ID_MODES}, got {sample_id!r}")
    found: list[InputFile] = []
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            files = sorted(p for p in pathlib.Path(path).rglob("*") if p.is_file())
            for file in files:
                kind = _kind(str(file))
                if kind != "unsupported":
                    record = _record_path(file) if kind == "wfdb" else str(file)
                    found.append(InputFile(kind, record, _sample_id(kind, record, path, sample_id)))
        elif os.path.isfile(path):
            kind = _kind(path)
            record = _record_path(path)
            found.append(InputFile(kind, record, _sample_id(kind, record, None, sample_id)))
        elif os.path.isfile(path + ".hea"):
            found.append(InputFile("wfdb", path, _sample_id("wfdb", path, None, sample_id)))
        else:
            found.append(InputFile("missing", path, path))
    _check_unique_ids(found, sample_id)
    return found


def _check_unique_ids(found: Sequence[InputFile], mode: str) -> None:
    first: dict[tuple[bool, str], InputFile] = {}
    for item in found:
        if item.kind in ("missing", "unsupported"):
            continue
        key = (item.kind == "wfdb", item.sample_id)
        if key in first:
            other = first[key]
            alternatives = [m for m in SAMPLE_ID_MODES if m != mode]
            raise ValueError(
                f"two inputs give the sample id {item.sample_id!r} (--sample-id {mode}): "
                f"{other.path} and {item.path}; give each input once, use --sample-id "
                f"{' or '.join(alternatives)}, or embed them in separate runs"
            )
        first[key] = item


def _kind(path: str) -> str:
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in WFDB_SUFFIXES:
        return "wfdb"
    if suffix in NPY_SUFFIXES:
        return "npy"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    return "unsupported"


def iter_records(
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    options: ArrayOptions | None = None,
    hdf5_dataset: str | None = None,
    sample_id: str = "relative",
) -> Iterator[ECGRecord | ECGValidationError]:
    """Every ECG of ``paths`` (files or folders, see :func:`input_files`), in order, with ids
    by the ``sample_id`` mode (:data:`SAMPLE_ID_MODES`).

    Failures are yielded, not raised, so callers can count them: a file that cannot be opened
    is one :class:`ECGValidationError` whose ``record_id`` is the file's sample id. Raises
    ``ValueError`` (before reading anything) if two inputs would give the same ids.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    return iter_input_files(input_files(paths, sample_id), options, hdf5_dataset)


def iter_input_files(
    files: Iterable[InputFile],
    options: ArrayOptions | None = None,
    hdf5_dataset: str | None = None,
) -> Iterator[ECGRecord | ECGValidationError]:
    """Every ECG of the :func:`input_files` ``files``, in order (see :func:`iter_records`)."""
    for item in files:
        yield from read_input_file(item, options, hdf5_dataset)


@contextlib.contextmanager
def _array_rows(
    item: InputFile, options: ArrayOptions, hdf5_dataset: str | None
) -> Iterator[ArrayRows | ECGValidationError]:
    """An array file (``.npy``, HDF5) opened: ``(ECGs, read_row)``, or its one failure."""
    if item.kind == "npy":
        with _npy_rows(item.path, item.sample_id, options) as opened:
            yield opened
    else:
        with _hdf5_rows(item.path, hdf5_dataset, item.sample_id, options) as opened:
            yield opened


def count_records(
    item: InputFile, options: ArrayOptions | None = None, hdf5_dataset: str | None = None
) -> tuple[int, bool]:
    """``(records, by_row)``: how many items :func:`read_input_file` yields for ``item``, and
    whether they can be read by row (``rows=``). A WFDB record, a missing or unsupported file
    and an array file that cannot be read as ``(N, samples, leads)`` give one item (one record
    or one failure, ``by_row`` False); a readable array file gives one per ECG (0 for an empty
    file)."""
    if item.kind not in ("npy", "hdf5"):
        return 1, False
    with _array_rows(item, options or ArrayOptions(), hdf5_dataset) as opened:
        if isinstance(opened, ECGValidationError):
            return 1, False
        return opened[0], True


def read_input_file(
    item: InputFile,
    options: ArrayOptions | None = None,
    hdf5_dataset: str | None = None,
    rows: range | None = None,
) -> Iterator[ECGRecord | ECGValidationError]:
    """The ECGs of one :func:`input_files` entry, in order: all of them, or those of the array
    rows ``rows`` (for an entry that :func:`count_records` says can be read by row).

    Failures are yielded, not raised. One that concerns a whole file (it cannot be opened, or is
    not ``(N, samples, leads)``) is one item named by the file's sample id; read by ``rows``, one
    item per row (``<id>:<row>``), so that a file that became unreadable still gives its count.
    Rows beyond the end of the file are not yielded.
    """
    options = options or ArrayOptions()
    kind, path = item.kind, item.path
    if kind == "wfdb":
        try:
            yield read_wfdb(path, item.sample_id)
        except ECGValidationError as error:
            yield error
    elif kind in ("npy", "hdf5"):
        with _array_rows(item, options, hdf5_dataset) as opened:
            if isinstance(opened, ECGValidationError):
                yield from _file_failures(opened, rows)
                return
            n, read_row = opened
            for row in range(n) if rows is None else range(rows.start, min(rows.stop, n)):
                yield read_row(row)
    elif kind == "missing":
        message = f"no such file or WFDB record {path}"
        yield _file_error(path, item.sample_id, "missing_file", message)
    else:
        message = f"{path}: not a WFDB header, .npy or HDF5 file"
        yield _file_error(path, item.sample_id, "unsupported_file", message)


def _file_failures(error: ECGValidationError, rows: range | None) -> Iterator[ECGValidationError]:
    """A whole file's failure: itself, or one copy per row of ``rows`` (``<id>:<row>``)."""
    if rows is None:
        yield error
        return
    for row in rows:
        record_id = f"{error.record_id}:{row}"
        yield _file_error(error.source, record_id, error.reason, f"record {record_id}: {error}")
