#!/usr/bin/env bash
# Prints the CMake arguments llama.cpp's CPU build needs on this host, for CMAKE_ARGS (the
# llama-cpp-python wheel) and scripts/build-native.sh (the native tools; both must use the same
# kernels for the parity tests).
#
# Normally nothing: llama.cpp's default native build (-march=native). Some virtual machines
# (Firecracker guests on Sapphire Rapids hosts, for one) list amx_tile in /proc/cpuinfo and let
# the process ask for the tile state, but trap the first tile instruction: a native build then uses
# ggml's AMX kernels for Q4_0/Q8_0/K-quant weights and every decode dies with SIGILL. On such a
# host this prints a build for the same instruction sets without AMX (GGML_NATIVE off, each ISA
# option on where the CPU lists it).
set -euo pipefail

grep -qw amx_tile /proc/cpuinfo 2>/dev/null || exit 0
cc=${CC:-cc}
command -v "$cc" >/dev/null || exit 0
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/amx.c" <<'EOF'
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <immintrin.h>
struct tilecfg { uint8_t palette, start; uint8_t reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } __attribute__((aligned(64)));
int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) return 0;  /* ggml would not use AMX */
    struct tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1; c.colsb[0] = 64; c.rows[0] = 16;
    _tile_loadconfig(&c); _tile_zero(0); _tile_release();
    return 0;
}
EOF
# a compiler without AMX support cannot build ggml's AMX kernels either
"$cc" -O1 -mamx-tile "$dir/amx.c" -o "$dir/amx" 2>/dev/null || exit 0
# run by an inner shell whose stderr (where it reports "Illegal instruction") goes nowhere
if bash -c '"$1" || exit $?' _ "$dir/amx" 2>/dev/null; then
    exit 0
fi

flags="-DGGML_NATIVE=OFF"
has() { grep -qw "$1" /proc/cpuinfo; }
for pair in sse4_2:SSE42 avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
            avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    if has "${pair%%:*}"; then flags+=" -DGGML_${pair#*:}=ON"; else flags+=" -DGGML_${pair#*:}=OFF"; fi
done
echo "$flags"
