"""``pclr bench``: throughput, FLOP rate, memory and compile time of pclr-jax against peers.

One job per module: :mod:`protocol` (how a contender process reports), :mod:`workloads` (the
pclr-jax contender: train step, embedding, loss, loader; inputs made on the device),
:mod:`flops` (FLOPs from the model's configuration, and from XLA's cost analysis), :mod:`peaks`
(measured and published matrix-product peaks), :mod:`runner` (contenders in subprocesses,
interleaved), :mod:`report` (machine facts, table, JSON), :mod:`fit` and :mod:`memory` (largest
batch, peak memory), :mod:`communication` (the bytes the compiled step's collectives move,
against an analytic model), :mod:`compiles` (counting a process's XLA compilations) and the
accelerator check (the first run on a GPU or TPU): :mod:`accelerator_check` (its stages, budget
and summary), :mod:`check_worker` (a stage on the device), :mod:`check_report` (the summary on
disk) and :mod:`conv_choice` (which convolution formulation "auto" should pick there). See
docs/benchmarks.md.

May import: step, model, losses, data, runtime, embedding, weights, signals.
"""
