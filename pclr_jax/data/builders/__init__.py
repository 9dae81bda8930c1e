"""tensorflow-datasets builders of prepared ECG data sets (``array_record``, no TensorFlow needed).

Importing this package registers the builders with tfds: ``pclr_synthetic``.
"""

from pclr_jax.data.builders.base import ECGBuilder, ECGConfig, Label
from pclr_jax.data.builders.pclr_synthetic import PclrSynthetic, SyntheticBuilderConfig

BUILDERS = {builder.name: builder for builder in (PclrSynthetic,)}

__all__ = [
    "BUILDERS",
    "ECGBuilder",
    "ECGConfig",
    "Label",
    "PclrSynthetic",
    "SyntheticBuilderConfig",
]
