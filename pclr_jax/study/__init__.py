"""Loss (and other) studies: several arms x several seeds at equal budget, one report.

``spec`` (the study config), ``cell`` (train + evaluate one arm at one seed), ``runner``
(every cell, resumable), ``statistics`` (t intervals, paired differences), ``report``
(``report.md``, ``results.csv``, figures). The command is ``pclr study`` (docs/studies.md).

May import: training, evaluation, data, embedding, benchmarking, model, losses, runtime.
"""
