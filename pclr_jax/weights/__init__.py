"""Weights interop: the Keras graph (:mod:`keras_graph`), ``.h5`` reading (:mod:`keras_h5`) and
writing (:mod:`keras_export`), SavedModel reading without TensorFlow (:mod:`savedmodel`, on
:mod:`savedmodel_graph`, :mod:`tensor_bundle`, :mod:`sstable`, :mod:`tf_protos`, :mod:`crc32c`),
what both Keras readers share (:mod:`keras_weights`), Orbax encoder checkpoints
(:mod:`encoder_checkpoint`), which form a weights path is (:mod:`forms`) and which output of a
file is the embedding (:mod:`output_layer`). Nothing in a weights file is ever executed.

May import: model, runtime.
"""
