"""Where a process runs and how it reports: the device mesh and ``jax.distributed`` processes
(:mod:`distributed`), what survives a lost process (:mod:`peer_watch`), cluster launchers
(:mod:`launchers`), how ECGs lie in device memory (:mod:`layout`), local or remote storage shared
by the processes (:mod:`storage`), worker processes for CPU work (:mod:`pool`), progress
reports (:mod:`progress`) and the host memory XLA:CPU frees between steps (:mod:`host_memory`).

May import: nothing else of pclr_jax.
"""
