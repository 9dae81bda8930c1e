"""ECG signals before the model: records from WFDB, ``.npy`` and HDF5 (:mod:`records`), lead names
(:mod:`leads`), checks and resampling to the model's input (:mod:`preprocess`).

May import: nothing else of pclr_jax.
"""
