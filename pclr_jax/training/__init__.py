"""The training loop behind ``train.py`` / ``pclr train``: data set-up, the loop with periodic
evaluation (:mod:`periodic_eval`), Orbax checkpoints, metric logs, preemption and exports; the
encoder a run starts from (:mod:`initial_encoder`).

May import: step, data, evaluation, weights, model, losses, runtime.
"""
