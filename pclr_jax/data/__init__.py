"""ECG data: tensorflow-datasets builders (:mod:`builders`), the synthetic generator
(:mod:`synthetic`), prepared data sets (and a split as ``pclr embed``'s source), patient pairing,
augmentations, the loaders and feeds.

May import: signals, runtime.
"""
