"""``pclr bench``: throughput, FLOP rate, memory and compile time of pclr-jax against peers.

One job per module: :mod:`protocol` (how a contender process reports), :mod:`workloads` (the
pclr-jax contender: train step, embedding, loss, loader), :mod:`flops` (FLOPs from XLA's cost
analysis), :mod:`peaks` (measured matrix-product peak), :mod:`runner` (contenders in
subprocesses, interleaved), :mod:`report` (machine facts, table, JSON). See docs/benchmarks.md.
"""
