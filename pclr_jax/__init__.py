"""pclr-jax: Patient Contrastive Learning of Representations (PCLR) for ECGs in JAX/Flax."""

import importlib

# The public names load on first use (PEP 562), so that processes which need no model (the
# ingest workers of `pclr prepare`, Beam workers) start without importing JAX and Flax.
_EXPORTS = {
    "Encoder": "pclr_jax.embedding.embedder",
    "load_encoder": "pclr_jax.embedding.embedder",
    "EncoderConfig": "pclr_jax.model.encoder",
    "PCLREncoder": "pclr_jax.model.encoder",
    "PCLRModel": "pclr_jax.model.encoder",
    "ProjectionHead": "pclr_jax.model.encoder",
}

__all__ = [
    "Encoder",
    "EncoderConfig",
    "PCLREncoder",
    "PCLRModel",
    "ProjectionHead",
    "load_encoder",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pclr_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
