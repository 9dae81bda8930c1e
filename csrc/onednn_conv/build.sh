#!/usr/bin/env bash
# PROTOTYPE (issue 23): builds the oneDNN convolution custom call (onednn_conv.cc) into
# build/onednn_conv/libpclr_onednn_conv.so (ignored by git), against the oneDNN wheels
# (pip install ".[cpu-onednn]": onednn-cpu-gomp + onednn-devel-cpu-gomp 2023.2) and JAX's FFI
# headers, with an rpath to the wheel's lib directory. Usage, from anywhere:
#     bash csrc/onednn_conv/build.sh [PYTHON]     # PYTHON: default .venv/bin/python, else python3
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${1:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
prefix="$("$python" -c 'import sys; print(sys.prefix)')"
ffi_include="$("$python" -c 'import jax; print(jax.ffi.include_dir())')"
if [[ ! -e "$prefix/lib/libdnnl.so.3" || ! -e "$prefix/include/oneapi/dnnl/dnnl.hpp" ]]; then
    echo "oneDNN not found under $prefix: pip install 'onednn-cpu-gomp==2023.2.*' 'onednn-devel-cpu-gomp==2023.2.*'" >&2
    exit 1
fi
out="$root/build/onednn_conv"
mkdir -p "$out"
g++ -O3 -std=c++17 -shared -fPIC -Wall \
    -isystem "$ffi_include" -isystem "$prefix/include" \
    "$here/onednn_conv.cc" -o "$out/libpclr_onednn_conv.so.tmp" \
    -L"$prefix/lib" -l:libdnnl.so.3 -Wl,-rpath,"$prefix/lib"
mv "$out/libpclr_onednn_conv.so.tmp" "$out/libpclr_onednn_conv.so"
echo "$out/libpclr_onednn_conv.so"
