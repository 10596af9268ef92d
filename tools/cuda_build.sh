#!/usr/bin/env bash
# Builds (or checks) cachedit with `--features cuda` on a machine without a CUDA install, from
# PyPI's NVIDIA wheels (the GPU machines have CUDA 13.0; so does this toolchain):
#
#   tools/cuda_build.sh check   # cargo check --features cuda: nvcc compiles candle's kernels (CI)
#   tools/cuda_build.sh build   # cargo build --release --features cuda → target/cuda/release/cachedit
#
# `check` needs nvcc, its headers and NVVM; `build` also needs the libraries the binary links
# (cuBLAS, cuRAND, NVRTC, the CUDA runtime) and a link stub for the driver library: libcuda.so.1
# comes with the GPU machine's driver, so here a stub with that soname, exporting the driver API
# symbols cudarc declares, stands in for it at link time only (as the CUDA toolkit's own
# lib/stubs/libcuda.so does). The wheels go to $CACHEDIT_CUDA_VENV (default
# ~/.cache/cachedit-cuda), outside the repository. CUDA_COMPUTE_CAP defaults to 90 (H100/H200).
# Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-build}
shift || true
venv=${CACHEDIT_CUDA_VENV:-$HOME/.cache/cachedit-cuda}
packages=(
    "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88"
    "nvidia-cuda-cccl==13.0.85" "nvidia-cuda-runtime==13.0.96"
)
if [ "$mode" = build ]; then
    packages+=("nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.5.25" "nvidia-cuda-nvrtc==13.0.88")
fi
if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "${packages[@]}"
root=$(echo "$venv"/lib/python3.*/site-packages/nvidia/cu13)
[ -x "$root/bin/nvcc" ] || { echo "error: no nvcc under $root" >&2; exit 1; }

# Unversioned names for the linker, next to the versioned libraries the wheels ship.
for lib in cudart cublas cublasLt curand nvrtc; do
    versioned=$(ls "$root/lib/lib$lib.so."* 2>/dev/null | grep -v builtins | grep -v alt | head -1 || true)
    if [ -n "$versioned" ] && [ ! -e "$root/lib/lib$lib.so" ]; then
        ln -s "$(basename "$versioned")" "$root/lib/lib$lib.so"
    fi
done

if [ "$mode" = build ]; then
    # The driver stub: every cu* function cudarc's driver bindings declare, empty.
    cargo fetch -q
    bindings=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs | head -1)
    mkdir -p "$root/lib/stubs"
    stub="$root/lib/stubs/libcuda.so"
    if [ ! -e "$stub" ] || [ "$bindings" -nt "$stub" ]; then
        grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$bindings" | sed 's/^pub unsafe fn //' | sort -u |
            sed 's/.*/int &(void) { return 999; }/' > "$root/lib/stubs/libcuda_stub.c"
        gcc -shared -fPIC -o "$stub" -Wl,-soname,libcuda.so.1 "$root/lib/stubs/libcuda_stub.c"
    fi
fi

export PATH="$root/bin:$PATH" CUDA_ROOT="$root" CUDA_PATH="$root"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
case "$mode" in
    check) cargo check -p cachedit --features cuda --target-dir target/cuda "$@" ;;
    build) cargo build --release -p cachedit --features cuda --target-dir target/cuda "$@" ;;
    *) echo "usage: tools/cuda_build.sh check|build [cargo args]" >&2; exit 2 ;;
esac
