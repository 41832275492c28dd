#!/usr/bin/env bash
# Build llama.cpp's `llama-quantize` from the llama.cpp that llama-cpp-python's sdist vendors (the same
# llama.cpp as tuneterm[gguf]) and install it into a bin folder (default: .venv/bin, where tuneterm looks
# for it besides PATH). tuneterm needs it only for quant.imatrix=true when llama-cpp-python is missing,
# and uses it instead of llama-cpp-python's binding when both are there.
#
#   scripts/build_llama_quantize.sh [BIN_DIR]
#
# Idempotent and cached: the sdist, the build tree and the built program live in
# ${TUNETERM_LLAMA_CACHE:-~/.cache/tuneterm/llama-quantize-VERSION}; a second run only copies the program.
# The only download is the sdist, through pip, from the package index. CPU flags: $CMAKE_ARGS when set,
# else portable ones (AVX2/FMA/F16C, no AVX-512/AMX): the native build crashed on some of our machines.
# Prints one line: where the program is, or why it was not built (then it exits non-zero).
set -euo pipefail

VERSION=0.3.36
cd "$(dirname "$0")/.."
BIN_DIR="${1:-.venv/bin}"
CACHE="${TUNETERM_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneterm/llama-quantize-$VERSION}"
BUILT="$CACHE/bin/llama-quantize"
LOG="$CACHE/build.log"
PORTABLE="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

install_built() {
    mkdir -p "$BIN_DIR"
    if ! cmp -s "$BUILT" "$BIN_DIR/llama-quantize"; then
        cp "$BUILT" "$BIN_DIR/llama-quantize.tmp" && mv "$BIN_DIR/llama-quantize.tmp" "$BIN_DIR/llama-quantize"
    fi
    echo "llama-quantize (llama.cpp of llama-cpp-python $VERSION): $BIN_DIR/llama-quantize"
}

if [ -x "$BUILT" ]; then
    install_built
    exit 0
fi

mkdir -p "$CACHE"
: >"$LOG"
fail() {
    echo "llama-quantize was not built: $1 (log: $LOG)" >&2
    exit 1
}
for tool in cmake c++ make; do command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"; done

SDIST="$CACHE/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
    PY="$BIN_DIR/python"
    [ -x "$PY" ] || PY="$(command -v python3)"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        "llama-cpp-python==$VERSION" -d "$CACHE" >>"$LOG" 2>&1 || fail "pip could not download the llama-cpp-python $VERSION sdist"
fi
SRC="$CACHE/src"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    rm -rf "$SRC" "$CACHE/unpack" && mkdir -p "$CACHE/unpack"
    tar -xzf "$SDIST" -C "$CACHE/unpack" "llama_cpp_python-$VERSION/vendor/llama.cpp" >>"$LOG" 2>&1 || fail "the sdist did not unpack"
    mv "$CACHE/unpack/llama_cpp_python-$VERSION/vendor/llama.cpp" "$SRC" && rm -rf "$CACHE/unpack"
fi

# shellcheck disable=SC2086  # CMAKE_ARGS / PORTABLE are lists of -D flags
cmake -S "$SRC" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF ${CMAKE_ARGS:-$PORTABLE} >>"$LOG" 2>&1 || fail "cmake could not configure llama.cpp"
cmake --build "$CACHE/build" --target llama-quantize -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >>"$LOG" 2>&1 \
    || fail "the llama-quantize target did not build"
mkdir -p "$CACHE/bin"
cp "$CACHE/build/bin/llama-quantize" "$BUILT.tmp" && mv "$BUILT.tmp" "$BUILT"
install_built
