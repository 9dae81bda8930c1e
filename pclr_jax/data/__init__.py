"""ECG data: the synthetic generator, prepared (tensorflow-datasets) data sets and loaders."""
