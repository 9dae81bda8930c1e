"""Makes sure a run's data set is prepared, and that it fits the model's input.

Generated data sets (``pclr_synthetic``) are prepared on first use when the config allows it
(``data.prepare_if_missing``), so the default job needs no download and no separate step; data
sets built from a user's files must be prepared with ``pclr prepare`` first.
"""

from __future__ import annotations

import jax
import ml_collections
from etils import epath

from pclr_jax.data.prepared import prepared_directory
from pclr_jax.runtime.storage import check_visible_everywhere, flags_of_all_processes

GENERATED = ("pclr_synthetic",)


def ensure_prepared(data: ml_collections.ConfigDict, n_samples: int) -> None:
    """Prepares ``data.name/data.config`` in ``data.data_dir`` if it is generated and missing.

    With several processes, process 0 prepares and every process must then see the files: a host
    whose ``data_dir`` is not shared with process 0's fails at once, in every process, with a
    message (rather than a ``FileNotFoundError`` on that host and a hang on the others). Data sets
    are not prepared per host, because real ones are prepared by ``pclr prepare`` beforehand and
    a shared copy guarantees that every host reads the same version.

    Raises:
        FileNotFoundError: a data set from files is not prepared (the message says how to).
        RuntimeError: some processes see the prepared data set and others do not.
        ValueError: the prepared ECGs have another length than the model's ``n_samples``.
    """
    directory = _find(data)
    if not flags_of_all_processes(directory is not None).any():
        if not (data.prepare_if_missing and data.name in GENERATED):
            prepared_directory(data.name, data.data_dir, data.config)  # raises, saying how to
        _prepare(data)
        directory = _find(data)
    check_visible_everywhere(
        directory is not None,
        f"the prepared data set {data.name}/{data.config} in data_dir={data.data_dir}",
        "process 0 sees it, so data_dir is not shared: put it on storage every host shares "
        "(gs://, NFS) or prepare the same data set on every host",
    )
    from pclr_jax.data.prepared import load_prepared

    prepared = load_prepared(data.name, data.train_split, data.data_dir, data.config)
    if prepared.n_samples != n_samples:
        raise ValueError(
            f"{data.name}/{data.config} in {directory} holds ECGs of {prepared.n_samples} "
            f"samples but the model expects {n_samples}: pick a matching data.config or "
            f"model.n_samples"
        )


def _find(data: ml_collections.ConfigDict) -> epath.Path | None:
    """The prepared data set's directory as this process sees it, or ``None``."""
    try:
        return prepared_directory(data.name, data.data_dir, data.config)
    except FileNotFoundError:
        return None


def _prepare(data: ml_collections.ConfigDict) -> None:
    """Generates the data set on process 0; other processes wait for it."""
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
        import tensorflow_datasets as tfds

        from pclr_jax.data.builders import BUILDERS

        # the builders report progress themselves (pclr_jax.runtime.progress)
        tfds.disable_progress_bar()
        print(f"preparing {data.name}/{data.config} in {data.data_dir} (first use)")
        BUILDERS[data.name](config=data.config, data_dir=data.data_dir).download_and_prepare()
    multihost_utils.sync_global_devices(f"prepared {data.name}/{data.config}")
