"""The pure Flax encoder: the PCLR 1-D ResNet (:mod:`encoder`), its convolution formulations
(:mod:`conv`) and batch-norm formulations (:mod:`batch_norm`).

May import: nothing else of pclr_jax.
"""
