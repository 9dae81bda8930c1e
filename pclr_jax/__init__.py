"""pclr-jax: Patient Contrastive Learning of Representations (PCLR) for ECGs in JAX/Flax."""

from pclr_jax.model import EncoderConfig, PCLREncoder, PCLRModel, ProjectionHead

__all__ = ["EncoderConfig", "PCLREncoder", "PCLRModel", "ProjectionHead"]
__version__ = "0.1.0"
