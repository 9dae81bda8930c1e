"""Weights interop: the Keras graph (:mod:`keras_graph`), ``.h5`` reading (:mod:`keras_h5`) and
writing (:mod:`keras_export`), Orbax encoder checkpoints (:mod:`encoder_checkpoint`) and which
output
of a file is the embedding (:mod:`output_layer`). Nothing in a weights file is ever executed.

May import: model, runtime.
"""
