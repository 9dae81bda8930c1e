"""Embeddings for users: :func:`~pclr_jax.embedding.embedder.load_encoder` reads released or
trained weights and :class:`~pclr_jax.embedding.embedder.Encoder` maps ECGs in mV to 320-d vectors.

May import: weights, model, signals, runtime.
"""
