"""Embeddings from trained PCLR weights: :func:`load_encoder` and :class:`Encoder`.

``load_encoder`` reads a Keras ``.h5`` file (with h5py only), a Keras SavedModel directory (without
TensorFlow) or a pclr-jax Orbax encoder directory; nothing in a file is executed.
``Encoder.embed`` maps ECGs ``(N, samples, leads)`` in mV -- already prepared with
:func:`pclr_jax.signals.preprocess.prepare_ecg` -- to ``(N, dim)`` float32.

Which output: ``output='final'`` returns what the file's model outputs, as Keras ``predict``
would: the projection when the weights include the projection head, else the pooled embedding.
``output='embed'`` always returns the pooled ``embed`` layer (``config.embed_dim``, 320 for the
released models), the representation PCLR's paper feeds to linear models. ``load_encoder``'s
default follows the file (:mod:`pclr_jax.weights.output_layer`): ``'embed'`` for encoders pclr-jax
trained, ``'final'`` (ml4h's meaning) for third-party Keras files.

Batches are split over all local devices by default (data parallel; the batch is padded to a
multiple of the device count), with the same results as on one device.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pclr_jax.model.encoder import EncoderConfig, PCLRModel
from pclr_jax.signals.leads import STANDARD_LEADS, normalize_lead_name
from pclr_jax.signals.preprocess import prepare_checked
from pclr_jax.signals.records import ECGRecord, ECGValidationError
from pclr_jax.weights.forms import read_weights
from pclr_jax.weights.output_layer import OUTPUTS, OutputChoice, choose_output


def _has_head(config: EncoderConfig, variables: dict) -> bool:
    return bool(config.head_sizes) and "head" in variables["params"]


@dataclasses.dataclass
class Encoder:
    """A PCLR encoder ready to embed ECGs.

    Attributes:
        config: the architecture (``config.n_samples`` x ``config.n_leads`` input).
        variables: ``{'params': {'encoder': ..., ['head': ...]}, 'batch_stats': ...}``.
        output: ``'final'`` (the file's output) or ``'embed'`` (the pooled layer).
        batch_size: ECGs per compiled step; the last batch is zero-padded, so the step compiles
            once per call shape (a call with fewer ECGs uses the next power of two).
        devices: the devices a batch is split over (data parallel; default: all local devices);
            the batch size is rounded up to a multiple of their number.
        source: where the weights came from.
        output_reason: why ``output`` was chosen (``load_encoder`` says it).
    """

    config: EncoderConfig
    variables: dict
    output: str = "final"
    batch_size: int = 64
    devices: Sequence[jax.Device] | None = None
    source: str = ""
    output_reason: str = ""

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        devices = list(self.devices or jax.local_devices())
        self._mesh = Mesh(np.array(devices), ("data",))
        self._batch_sharding = NamedSharding(self._mesh, PartitionSpec("data"))
        replicated = NamedSharding(self._mesh, PartitionSpec())
        self._variables = jax.device_put(self.variables, replicated)
        model = PCLRModel(self.config)
        final = self.output == "final" and _has_head(self.config, self.variables)

        def forward(variables, ecgs):
            if final:
                return model.apply(variables, ecgs, train=False)[1]
            return model.apply(variables, ecgs, method=PCLRModel.embed)

        self._forward = jax.jit(forward, out_shardings=replicated)

    @property
    def n_devices(self) -> int:
        """How many devices a batch is split over."""
        return self._mesh.size

    @property
    def embed_dim(self) -> int:
        """Width of :meth:`embed`'s output."""
        if self.output == "final" and _has_head(self.config, self.variables):
            return self.config.head_sizes[-1]
        return self.config.embed_dim

    def describe_output(self) -> str:
        """One line: which layer :meth:`embed` returns, its width and why."""
        if self.output == "final" and _has_head(self.config, self.variables):
            layer = "the projection head's output"
        else:
            layer = "the pooled 'embed' layer"
        reason = f": {self.output_reason}" if self.output_reason else ""
        return f"output {self.output!r}, {layer} ({self.embed_dim}-d){reason}"

    def input_leads(self, leads: Sequence[str] | None = None) -> tuple[str, ...]:
        """The leads to feed, in order: ``leads`` (normalised) or, for a 12-lead model, the
        standard 12. Raises ``ValueError`` if their number is not the model's ``n_leads``."""
        if leads is None:
            if self.config.n_leads != len(STANDARD_LEADS):
                raise ValueError(f"the model takes {self.config.n_leads} lead(s): name them")
            return STANDARD_LEADS
        leads = tuple(normalize_lead_name(lead) for lead in leads)
        if len(leads) != self.config.n_leads:
            raise ValueError(f"{len(leads)} leads given but the model takes {self.config.n_leads}")
        return leads

    def _step_size(self, n: int) -> int:
        size = min(self.batch_size, 1 << max(0, n - 1).bit_length())
        devices = self._mesh.size
        return -(-size // devices) * devices

    def embed(self, ecgs: np.ndarray) -> np.ndarray:
        """``(N, embed_dim)`` float32 embeddings of ECGs ``(N, n_samples, n_leads)`` in mV.

        Raises ``ValueError`` if the shape is not the model's input or a value is not finite.
        """
        ecgs = np.asarray(ecgs, dtype=np.float32)
        expected = (self.config.n_samples, self.config.n_leads)
        if ecgs.ndim != 3 or ecgs.shape[1:] != expected:
            raise ValueError(
                f"expected ECGs (N, {expected[0]} samples, {expected[1]} leads), got "
                f"{ecgs.shape}; resample with pclr_jax.signals.preprocess.prepare_ecg"
            )
        if not np.isfinite(ecgs).all():
            bad = np.flatnonzero(~np.isfinite(ecgs).all(axis=(1, 2)))
            raise ValueError(f"ECGs {bad[:10].tolist()} hold NaN or inf values")
        n = ecgs.shape[0]
        if n == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        step = self._step_size(n)
        outputs = []
        for start in range(0, n, step):
            batch = ecgs[start : start + step]
            if len(batch) < step:
                batch = np.pad(batch, [(0, step - len(batch)), (0, 0), (0, 0)])
            outputs.append(
                self._forward(self._variables, jax.device_put(batch, self._batch_sharding))
            )
        return np.concatenate([np.asarray(out) for out in outputs])[:n].astype(np.float32)

    def embed_records(
        self,
        records: Iterable[ECGRecord | ECGValidationError],
        leads: Sequence[str] | None = None,
        resample: str = "ml4h",
        expected_duration_s: float | None = 10.0,
        strict: bool = False,
        allow: Sequence[str] = (),
    ) -> RecordEmbeddings:
        """Prepares (:func:`~pclr_jax.signals.preprocess.prepare_checked`) and embeds records, e.g.
        those
        of :func:`pclr_jax.signals.records.iter_records`, streaming in chunks of ``4 * batch_size``.

        ``leads`` defaults to the 12 standard leads (required for other models, e.g.
        ``('I',)``). A record that fails preparation, an :class:`ECGValidationError` item, or a
        repeated record id (``'duplicate_id'``, naming the first record's file) is collected in
        ``rejected`` -- or raised when ``strict``. Checks named in ``allow``
        (:data:`~pclr_jax.signals.preprocess.ALLOWABLE_CHECKS`) do not reject: the record is
        embedded
        and its failures are listed in ``allowed``. Every record ends up either embedded or
        rejected.
        """
        return _embed_records(self, records, leads, resample, expected_duration_s, strict, allow)


@dataclasses.dataclass
class RecordEmbeddings:
    """What :meth:`Encoder.embed_records` made of its records.

    Attributes:
        sample_ids: record ids of the embedded records, in input order.
        embeddings: ``(len(sample_ids), embed_dim)`` float32.
        rejected: the failures, in input order; ``len(sample_ids) + len(rejected)`` is the number
            of records read.
        allowed: the failed checks that ``allow`` let through (those records are embedded).
    """

    sample_ids: list[str]
    embeddings: np.ndarray
    rejected: list[ECGValidationError]
    allowed: list[ECGValidationError] = dataclasses.field(default_factory=list)


def _embed_records(
    encoder: Encoder,
    records: Iterable[ECGRecord | ECGValidationError],
    leads: Sequence[str] | None,
    resample: str,
    expected_duration_s: float | None,
    strict: bool,
    allow: Sequence[str] = (),
) -> RecordEmbeddings:
    config = encoder.config
    leads = encoder.input_leads(leads)
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    rejected: list[ECGValidationError] = []
    allowed: list[ECGValidationError] = []
    seen: dict[str, str] = {}  # sample id -> its file
    n_in = 0
    for item in records:
        n_in += 1
        try:
            if isinstance(item, ECGValidationError):
                raise item
            if item.record_id in seen:
                raise ECGValidationError(
                    f"sample id already given by {seen[item.record_id]} in this run",
                    record_id=item.record_id,
                    reason="duplicate_id",
                )
            prepared = prepare_checked(
                item, config.n_samples, leads, resample, expected_duration_s, allow=allow
            )
        except ECGValidationError as error:
            error.source = error.source or getattr(item, "source", "")
            if strict:
                raise
            rejected.append(error)
            continue
        for error in prepared.allowed:
            error.source = error.source or item.source
        allowed.extend(prepared.allowed)
        seen[item.record_id] = item.source
        ids.append(item.record_id)
        pending.append(prepared.ecg)
        if len(pending) >= 4 * encoder.batch_size:
            chunks.append(encoder.embed(np.stack(pending)))
            pending.clear()
    if pending:
        chunks.append(encoder.embed(np.stack(pending)))
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, encoder.embed_dim), np.float32)
    if len(ids) + len(rejected) != n_in or len(embeddings) != len(ids):
        raise RuntimeError(
            f"bookkeeping error: {n_in} records in, {len(ids)} embedded, {len(rejected)} rejected"
        )
    return RecordEmbeddings(ids, embeddings, rejected, allowed)


def load_encoder(
    path: str | os.PathLike,
    output: str | None = None,
    batch_size: int = 64,
    devices: Sequence[jax.Device] | None = None,
) -> Encoder:
    """An :class:`Encoder` from a Keras ``.h5`` file, a Keras SavedModel directory or a pclr-jax
    Orbax encoder directory (told apart by :func:`pclr_jax.weights.forms.detect_weights_form`).

    Args:
        path: ``*.h5``/``*.hdf5`` (read by :func:`pclr_jax.weights.keras_h5.read_keras_h5`), a
            SavedModel directory such as ml4h's ``PCLR_lead_I/`` (read without TensorFlow by
            :func:`pclr_jax.weights.savedmodel.read_savedmodel`) or a directory written by
            :func:`pclr_jax.weights.encoder_checkpoint.save_encoder`.
        output: ``'final'`` (the model's output: the projection if the weights have a head),
            ``'embed'`` (the pooled embedding), or ``None``: the file's default, ``'embed'`` for
            an encoder pclr-jax trained and ``'final'`` for a third-party Keras file
            (:mod:`pclr_jax.weights.output_layer`; ``Encoder.describe_output`` says which and why).
        batch_size: ECGs per compiled step.
        devices: devices to split batches over (default: all local devices).
    """
    path = os.fspath(path)
    weights = read_weights(path)
    choice: OutputChoice = choose_output(output, weights.marker)
    return Encoder(
        weights.config,
        weights.variables,
        choice.output,
        batch_size,
        devices,
        path,
        output_reason=choice.reason,
    )
