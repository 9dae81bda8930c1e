"""Evaluation of ECG embeddings: patient retrieval, linear probes, learning curves, maps."""

from pclr_jax.evaluation.retrieval import format_retrieval, retrieval_accuracy

__all__ = ["format_retrieval", "retrieval_accuracy"]
