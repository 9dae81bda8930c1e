"""The synthetic ECG generator: :mod:`config` (the knobs), :mod:`traits` (patients' latent traits
and dipole models), :mod:`visits` (what changes between visits), :mod:`render` (dipole to 12 leads),
:mod:`generator` (whole data sets) and :mod:`calibration` (statistics against PTB-XL).

May import: signals, runtime (as the rest of data).
"""
