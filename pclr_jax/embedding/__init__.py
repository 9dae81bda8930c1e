"""Embeddings for users: :func:`~pclr_jax.embedding.embedder.load_encoder` reads released or
trained weights and :class:`~pclr_jax.embedding.embedder.Encoder` maps ECGs in mV to 320-d vectors;
:func:`~pclr_jax.embedding.to_table.embed_to_table` is ``pclr embed``'s engine, from records to a
table: positions and parts (:mod:`plan`), records as a source (:mod:`inputs`), reading and
preparing chunks in reader processes (:mod:`reading`), embedding parts (:mod:`pipeline`, or
:mod:`beam_embed` on Apache Beam), resumable parts on disk (:mod:`parts`) and the output assembled
from them (:mod:`assemble`).

May import: weights, model, signals, runtime.
"""
