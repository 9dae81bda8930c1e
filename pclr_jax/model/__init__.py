"""The pure Flax encoder: the PCLR 1-D ResNet (:mod:`encoder`), its convolution formulations
(:mod:`conv`; the oneDNN custom call in :mod:`onednn_conv`, built by :mod:`onednn_build`) and
batch-norm formulations (:mod:`batch_norm`).

May import: nothing else of pclr_jax.
"""
