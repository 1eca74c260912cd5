#!/usr/bin/env bash
# Build llama.cpp's own `llama-speculative-simple`, `llama-bench`, `llama-server`, `llama-cli` (on the server's code:
# a few more files), `llama-fit-params` and `llama-completion` for the CPU from the very
# source llama-cpp-python vendors (the pinned version's sdist from PyPI), for the parity test and
# the in-process-vs-native benchmark. About 20 minutes on two cores; reruns are incremental.
#   scripts/build-native.sh [OUT_DIR]   (default build/native; tools land in OUT_DIR/bin)
set -euo pipefail
out="${1:-build/native}"
version="$(python3 -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
src="build/sdist/llama_cpp_python-${version}/vendor/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
    mkdir -p build/sdist
    python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==${version}" -d build/sdist
    tar xzf "build/sdist/llama_cpp_python-${version}.tar.gz" -C build/sdist
fi
# the same CPU kernels as the wheel (scripts/cpu-build-flags.sh: nothing unless the host's AMX traps)
# shellcheck disable=SC2046
cmake -S "$src" -B "$out" $(scripts/cpu-build-flags.sh) -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > "$out.configure.log"
cmake --build "$out" --target llama-speculative-simple llama-bench llama-server llama-cli llama-fit-params \
    llama-completion -j "$(nproc)"
echo "native tools in $out/bin"
