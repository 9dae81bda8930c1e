"""Loss (and other) studies: several arms x several seeds at equal budget, one report.

``spec`` (the study config), ``cell`` (train + evaluate one arm at one seed), ``items`` (a
cell's per-test-item results), ``runner`` (every cell, resumable), ``statistics`` (t intervals
over seeds, paired differences), ``two_source`` (intervals over seeds and test set),
``multiplicity`` (Holm, Benjamini-Hochberg), ``budget`` (the cells' configs field by field),
``report`` (``report.md``, ``results.csv``, ``summary.csv``, figures), ``summary_text``
(``summary.md``, plain words from ``summary.csv``), ``power`` and ``plan`` (seeds needed, from a
pilot). The command is ``pclr study`` (docs/studies.md).

May import: training, evaluation, data, embedding, benchmarking, model, losses, runtime.
"""
