"""Evaluation of ECG embeddings: patient retrieval, linear probes, learning curves, maps.

The network-training baselines live in ``pclr_jax.evaluation.supervised`` and the figures in
``plots`` and ``embedding_map`` (imported on demand: they pull in JAX and matplotlib).

May import: data, model.
"""

from pclr_jax.evaluation.probe import (
    DEFAULT_SIZES,
    LearningCurve,
    LinearProbe,
    ProbeError,
    TaskSpec,
    encode_labels,
    fit_linear_probe,
    format_summary,
    known_labels,
    learning_curve,
    linear_probe,
    linear_probe_source,
    score_predictions,
    summarize,
)
from pclr_jax.evaluation.retrieval import format_retrieval, retrieval_accuracy, retrieval_intervals

__all__ = [
    "DEFAULT_SIZES",
    "LearningCurve",
    "LinearProbe",
    "ProbeError",
    "TaskSpec",
    "encode_labels",
    "fit_linear_probe",
    "format_retrieval",
    "format_summary",
    "known_labels",
    "learning_curve",
    "linear_probe",
    "linear_probe_source",
    "retrieval_accuracy",
    "retrieval_intervals",
    "score_predictions",
    "summarize",
]
