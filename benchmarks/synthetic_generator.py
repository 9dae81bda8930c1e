"""Throughput of the synthetic ECG generator on one CPU core.

    python benchmarks/synthetic_generator.py [--n-patients 4000] [--ecgs-per-patient 1 4]

Pins the process to one core and BLAS to one thread (set before NumPy is imported), generates one
warm-up chunk (the first touch of fresh memory is slow in some VMs), then times
``iter_synthetic_chunks`` end to end, and separately the patient/recording sampling and the
rendering of the same chunks.
"""

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from pclr_jax.data.synthetic import generator as synthetic  # noqa: E402
from pclr_jax.data.synthetic.config import SyntheticConfig  # noqa: E402
from pclr_jax.data.synthetic.render import render  # noqa: E402
from pclr_jax.data.synthetic.traits import sample_patient_model  # noqa: E402


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=4000)
    parser.add_argument("--ecgs-per-patient", type=int, nargs=2, default=(1, 4))
    parser.add_argument("--n-samples", type=int, default=4096)
    parser.add_argument("--chunk-patients", type=int, default=256)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    args = parser.parse_args()

    os.sched_setaffinity(0, {args.core})
    config = SyntheticConfig(
        n_patients=args.n_patients,
        ecgs_per_patient=tuple(args.ecgs_per_patient),
        n_samples=args.n_samples,
    )
    print(f"{_cpu_name()}, pinned to core {args.core} of {os.cpu_count()}")
    print(f"load average before: {os.getloadavg()}")
    print(
        f"config: {args.n_patients} patients x {args.ecgs_per_patient} ECGs, {args.n_samples} x 12"
    )

    warmup = SyntheticConfig(n_patients=args.chunk_patients, ecgs_per_patient=(1, 4))
    start = time.perf_counter()
    for _ in synthetic.iter_synthetic_chunks(warmup, args.chunk_patients):
        pass
    print(f"warm-up chunk (noise bank, first memory touch): {time.perf_counter() - start:.2f} s")

    count, start = 0, time.perf_counter()
    for ecgs, _ in synthetic.iter_synthetic_chunks(config, args.chunk_patients):
        count += len(ecgs)
    elapsed = time.perf_counter() - start
    print(f"iter_synthetic_chunks: {count} ECGs in {elapsed:.2f} s = {count / elapsed:,.0f} ECG/s")

    bank = synthetic.noise_bank(config.seed)
    sampling = rendering = 0.0
    for first in range(0, config.n_patients, args.chunk_patients):
        ids = np.arange(first, min(first + args.chunk_patients, config.n_patients))
        t0 = time.perf_counter()
        inputs, _ = synthetic.sample_recordings(config, sample_patient_model(config, ids))
        t1 = time.perf_counter()
        out = np.empty((len(inputs), config.n_samples, 12), np.float32)
        for lo in range(0, len(inputs), synthetic.RENDER_BATCH):
            rows = slice(lo, lo + synthetic.RENDER_BATCH)
            render(inputs[rows], config.n_samples, config.sampling_rate, bank, out=out[rows])
        sampling += t1 - t0
        rendering += time.perf_counter() - t1
    print(
        f"breakdown per ECG: sampling patients and recordings {sampling / count * 1e6:.0f} us, "
        f"rendering {rendering / count * 1e6:.0f} us"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
