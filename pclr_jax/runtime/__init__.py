"""Where a process runs and how it reports: the device mesh and ``jax.distributed`` processes
(:mod:`distributed`), what survives a lost process (:mod:`peer_watch`), cluster launchers
(:mod:`launchers`), how ECGs lie in device memory (:mod:`layout`), local or remote storage shared
by the processes (:mod:`storage`), worker processes for CPU work (:mod:`pool`) and progress
reports (:mod:`progress`).

May import: nothing else of pclr_jax.
"""
