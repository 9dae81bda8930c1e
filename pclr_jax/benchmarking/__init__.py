"""``pclr bench``: throughput, FLOP rate, memory and compile time of pclr-jax against peers.

One job per module: :mod:`protocol` (how a contender process reports), :mod:`workloads` (the
pclr-jax contender: train step, embedding, loss, loader), :mod:`flops` (FLOPs from XLA's cost
analysis), :mod:`peaks` (measured matrix-product peak), :mod:`runner` (contenders in
subprocesses, interleaved), :mod:`report` (machine facts, table, JSON), :mod:`fit` and
:mod:`memory` (largest batch, peak memory), :mod:`communication` (the bytes the compiled step's
collectives move, against an analytic model) and :mod:`accelerator_check` (the first run on a GPU
or TPU). See docs/benchmarks.md.

May import: step, model, losses, data, runtime, embedding, weights, signals.
"""
