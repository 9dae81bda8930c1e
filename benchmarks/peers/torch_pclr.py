"""PyTorch peer of ``pclr bench``: the PCLR model, NT-Xent training step and embedding in torch.

The same network as :mod:`pclr_jax.model.encoder` (given by ``--arch``, the JSON of
``pclr_jax.benchmarking.workloads.arch_spec``), written independently in torch:

* 1-D convolutions without bias and with TensorFlow's 'same' padding (``out = ceil(n / s)``, the
  odd padding sample on the right: 7 left / 8 right for a kernel of 16 at stride 1), strided
  convolutions in the main path of each residual unit;
* skip path: max-pooling with window = stride ('same') and a 1x1 convolution where the width
  changes;
* batch norm with epsilon 1e-3 and Keras' momentum 0.99 (torch's ``momentum=0.01``);
* global average pooling -> ``embed``; projection head of Dense layers with ReLU between them;
* training: both views in ONE forward pass (``2B`` ECGs), NT-Xent with temperature 0.1 as the
  sum of the two views' mean cross-entropies over ``[ab, aa]`` / ``[ba, bb]`` with the self
  similarity masked, Adam (lr 1e-3, eps 1e-7), gradient clipping at global norm 1.

``--mode eager`` runs it as is, ``--mode compile`` through ``torch.compile`` (inductor).
``--dtype bf16`` runs under ``torch.autocast(device, torch.bfloat16)``. ``--device gpu`` (what
``pclr bench`` passes when pclr-jax runs on a GPU) runs on ``cuda:0`` and reports
``torch.cuda.max_memory_allocated()``; a torch that cannot use a GPU (a CPU wheel) exits with the
protocol's device code rather than run on the CPU, and so does ``--device tpu``.
Parameters are counted as Keras does (weights, biases, batch-norm scales, offsets and running
statistics). ``--check FILE.npz`` loads pclr-jax weights and compares outputs (used by the tests).

Install: ``pip install torch==2.13.0`` (a CPU wheel) or
``pip install torch --index-url https://download.pytorch.org/whl/cpu``.
"""

from __future__ import annotations

import math
import sys

from bench_protocol import protocol  # this directory (see its docstring)

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as error:  # reported by pclr bench as "peer unavailable"
    print(
        f"torch peer: cannot import {error.name!r} with {sys.executable}; install PyTorch (CPU): "
        "pip install torch==2.13.0 numpy, or pip install 'pclr-jax[peers-torch]'",
        file=sys.stderr,
    )
    sys.exit(protocol.MISSING_EXIT_CODE)


def same_padding(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (left, right) of a length-``n`` axis."""
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


class SameConv1d(nn.Module):
    """Conv1d without bias, TF 'same' padding; input and output ``(batch, channels, n)``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=False)
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        left, right = same_padding(x.shape[-1], self.kernel, self.stride)
        if left or right:
            x = F.pad(x, (left, right))
        return self.conv(x)


def batch_norm(channels: int, arch: dict) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=arch["bn_epsilon"], momentum=1 - arch["bn_momentum"])


class ResidualUnit(nn.Module):
    def __init__(self, c_in: int, filters: int, stride: int, arch: dict):
        super().__init__()
        k = arch["kernel_size"]
        self.stride = stride
        self.skip_conv = SameConv1d(c_in, filters, 1) if c_in != filters else None
        self.conv_0 = SameConv1d(c_in, filters, k)
        self.bn_0 = batch_norm(filters, arch)
        self.conv_1 = SameConv1d(filters, filters, k, stride)
        self.bn_out = batch_norm(filters, arch)

    def forward(self, x, skip):
        if self.stride > 1:
            left, right = same_padding(skip.shape[-1], self.stride, self.stride)
            if left or right:
                skip = F.pad(skip, (left, right), value=-math.inf)
            skip = F.max_pool1d(skip, self.stride, self.stride)
        if self.skip_conv is not None:
            skip = self.skip_conv(skip)
        x = F.relu(self.bn_0(self.conv_0(x)))
        total = self.conv_1(x) + skip
        return F.relu(self.bn_out(total)), total


class PCLRModel(nn.Module):
    """ECGs ``(batch, samples, leads)`` -> ``(embed, projection)``; no head: projection = embed."""

    def __init__(self, arch: dict, with_head: bool = True):
        super().__init__()
        self.stem_conv = SameConv1d(arch["n_leads"], arch["stem_filters"], arch["kernel_size"])
        self.stem_bn = batch_norm(arch["stem_filters"], arch)
        units, c_in = [], arch["stem_filters"]
        for filters, stride in zip(arch["unit_filters"], arch["downsample"], strict=True):
            units.append(ResidualUnit(c_in, filters, stride, arch))
            c_in = filters
        self.units = nn.ModuleList(units)
        head, d = [], c_in
        for size in arch["head_sizes"] if with_head else ():
            head.append(nn.Linear(d, size))
            d = size
        self.head = nn.ModuleList(head)

    def forward(self, ecg):
        x = F.relu(self.stem_bn(self.stem_conv(ecg.transpose(1, 2))))
        skip = x
        for unit in self.units:
            x, skip = unit(x, skip)
        embed = x.float().mean(dim=-1)
        z = embed
        for i, dense in enumerate(self.head):
            z = dense(z)
            if i < len(self.head) - 1:
                z = F.relu(z)
        return embed, z.float()


def count_parameters(model: nn.Module) -> int:
    """Weights plus batch-norm running statistics (as Keras' ``count_params``)."""
    stats = sum(b.numel() for name, b in model.named_buffers() if "running_" in name)
    return sum(p.numel() for p in model.parameters()) + stats


def ntxent(z_a, z_b, temperature: float = 0.1):
    """SimCLR's NT-Xent as ml4h: mean CE over [ab, aa] plus mean CE over [ba, bb]."""
    a, b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    n = a.shape[0]
    mask = torch.eye(n, dtype=torch.bool, device=a.device)
    aa = (a @ a.T / temperature).masked_fill(mask, -1e9)
    bb = (b @ b.T / temperature).masked_fill(mask, -1e9)
    ab, ba = a @ b.T / temperature, b @ a.T / temperature
    labels = torch.arange(n, device=a.device)
    return F.cross_entropy(torch.cat([ab, aa], 1), labels) + F.cross_entropy(
        torch.cat([ba, bb], 1), labels
    )


def load_flax_variables(model: PCLRModel, flat: dict) -> None:
    """Copies pclr-jax variables (``'params/encoder/unit_0/conv_0/kernel'`` -> array) in."""

    def put(param, value, transpose=None):
        value = torch.from_numpy(np.ascontiguousarray(np.asarray(value, np.float32)))
        param.data.copy_(value.permute(*transpose) if transpose else value)

    def conv(module: SameConv1d, prefix: str):
        put(module.conv.weight, flat[f"params/encoder/{prefix}/kernel"], (2, 1, 0))

    def bn(module: nn.BatchNorm1d, prefix: str):
        put(module.weight, flat[f"params/encoder/{prefix}/scale"])
        put(module.bias, flat[f"params/encoder/{prefix}/bias"])
        put(module.running_mean, flat[f"batch_stats/encoder/{prefix}/mean"])
        put(module.running_var, flat[f"batch_stats/encoder/{prefix}/var"])

    conv(model.stem_conv, "stem_conv")
    bn(model.stem_bn, "stem_bn")
    for i, unit in enumerate(model.units):
        if unit.skip_conv is not None:
            conv(unit.skip_conv, f"unit_{i}/skip_conv")
        conv(unit.conv_0, f"unit_{i}/conv_0")
        bn(unit.bn_0, f"unit_{i}/bn_0")
        conv(unit.conv_1, f"unit_{i}/conv_1")
        bn(unit.bn_out, f"unit_{i}/bn_out")
    for i, dense in enumerate(model.head):
        put(dense.weight, flat[f"params/head/dense_{i}/kernel"], (1, 0))
        put(dense.bias, flat[f"params/head/dense_{i}/bias"])


def check(path: str, arch: dict) -> dict:
    """Eval-mode outputs with pclr-jax's weights against pclr-jax's (from ``path``)."""
    data = dict(np.load(path))
    model = PCLRModel(arch).eval()
    load_flax_variables(model, data)
    with torch.no_grad():
        embed, z = model(torch.from_numpy(data["input"]))
    return {
        "embed_max_abs_diff": float(np.abs(embed.numpy() - data["embed"]).max()),
        "projection_max_abs_diff": float(np.abs(z.numpy() - data["projection"]).max()),
        "max_abs_output": float(np.abs(data["embed"]).max()),
    }


def torch_device(device: str | None) -> torch.device:
    """The torch device for pclr bench's ``--device`` (default cpu); refuses what torch lacks."""
    if device in (None, "cpu"):
        return torch.device("cpu")
    if device == "gpu" and torch.cuda.is_available():
        return torch.device("cuda", 0)
    protocol.refuse(
        protocol.DEVICE_EXIT_CODE,
        f"torch peer: pclr-jax runs on {device!r} but torch {torch.__version__} with "
        f"{sys.executable} cannot (CUDA available: {torch.cuda.is_available()}); refusing to "
        "compare with a CPU run. Install a CUDA build of torch for the GPU, e.g. pip install "
        "torch==2.13.0 (Linux wheels from PyPI are CUDA builds), and name it with --peer-python.",
    )


def device_peak_mib() -> float | None:
    """Peak memory torch allocated on the GPU, MiB (None without CUDA)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def setup(args, arch: dict):
    torch.manual_seed(args.seed)
    device = torch_device(args.device)
    rng = np.random.default_rng(args.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    info = {
        "framework": f"PyTorch {torch.__version__} {args.mode or 'eager'}",
        "threads": torch.get_num_threads(),
        "device": "gpu" if device.type == "cuda" else "cpu",
        "device_kind": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    shape = (args.batch_pairs, arch["n_samples"], arch["n_leads"])
    if args.workload == "train":
        model = PCLRModel(arch).train().to(device)
        info["n_params"] = count_parameters(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        view_a = torch.from_numpy(rng.normal(size=shape).astype(np.float32)).to(device)
        view_b = torch.from_numpy(rng.normal(size=shape).astype(np.float32)).to(device)
        forward = torch.compile(model) if args.mode == "compile" else model

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                _, z = forward(torch.cat([view_a, view_b], 0))
            loss = ntxent(z[: args.batch_pairs], z[args.batch_pairs :])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            loss.item()  # waits for the device

        info["ecgs_per_step"] = 2 * args.batch_pairs
    elif args.workload == "embed":
        model = PCLRModel(arch, with_head=False).eval().to(device)
        info["n_params"] = count_parameters(model)
        n = args.batch_size or 2 * args.batch_pairs
        x = rng.normal(0, 0.5, (n, arch["n_samples"], arch["n_leads"])).astype(np.float32)
        forward = torch.compile(model) if args.mode == "compile" else model

        def step():  # host array in, host array out, as pclr-jax's Encoder.embed
            with torch.inference_mode(), autocast:
                forward(torch.from_numpy(x).to(device))[0].float().cpu().numpy()

        info["ecgs_per_step"] = n
    elif args.workload == "loss":
        dim = arch["head_sizes"][-1] if arch["head_sizes"] else arch["unit_filters"][-1]
        z_a = torch.randn(args.batch_pairs, dim, device=device, requires_grad=True)
        z_b = torch.randn(args.batch_pairs, dim, device=device, requires_grad=True)
        loss_fn = torch.compile(ntxent) if args.mode == "compile" else ntxent

        def step():
            z_a.grad = z_b.grad = None
            loss_fn(z_a, z_b).backward()
            sync()

        info.update(n_params=0, ecgs_per_step=2 * args.batch_pairs)
    else:
        raise SystemExit(f"torch peer: no {args.workload!r} workload (train, embed, loss)")
    return step, info


def main() -> None:
    protocol.peer_main(__doc__.split("\n")[0], setup, check, device_peak_mib)


if __name__ == "__main__":
    main()
