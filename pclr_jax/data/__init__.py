"""ECG data: tensorflow-datasets builders (:mod:`builders`), the synthetic generator
(:mod:`synthetic`), prepared data sets, patient pairing, augmentations, the loaders and feeds.

May import: signals, runtime.
"""
