"""pclr-jax: Patient Contrastive Learning of Representations (PCLR) for ECGs in JAX/Flax."""

from pclr_jax.embedder import Encoder, load_encoder
from pclr_jax.model import EncoderConfig, PCLREncoder, PCLRModel, ProjectionHead

__all__ = [
    "Encoder",
    "EncoderConfig",
    "PCLREncoder",
    "PCLRModel",
    "ProjectionHead",
    "load_encoder",
]
__version__ = "0.1.0"
