#!/usr/bin/env bash
# Sets up everything bench/peers/run.sh needs, idempotently:
#   bench/.venv                      Python venv: torch (CPU use), transformers, gguf, numpy,
#                                    matplotlib, llama-cpp-python (built from its sdist)
#   bench/build/llama.cpp            llama-bench and llama-quantize, built with cmake from the
#                                    llama.cpp that the llama-cpp-python sdist vendors (same
#                                    commit as the Python binding, so the numbers agree)
#   bench/build/stream               the STREAM-like triad (bench/peers/stream.c)
# A second run checks each piece and skips it when present.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH="$ROOT/bench"
VENV="$BENCH/.venv"
BUILD="$BENCH/build"
CACHE="$BENCH/cache"
# accelerate: transformers needs it to load a GGUF.
# Pinned so that a rerun measures the same peers; llama-cpp-python's vendored llama.cpp is
# what llama-bench and llama-quantize are built from.
LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PY_PKGS=(torch transformers accelerate gguf numpy matplotlib)

log() { echo "[setup] $*" >&2; }
mkdir -p "$BUILD" "$CACHE"

# --- system tools: a C compiler with OpenMP (gcc) and python3 with venv -------------------
if ! command -v gcc >/dev/null || ! command -v python3 >/dev/null; then
  log "installing gcc and python3 (apt)"
  apt-get update -qq && apt-get install -y -qq gcc python3 python3-venv
fi

# --- venv ----------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
if ! "$PY" -c 'import torch, transformers, accelerate, gguf, numpy, matplotlib' 2>/dev/null; then
  log "installing ${PY_PKGS[*]} (torch from the registry is the CUDA build; it runs on CPU)"
  "${PIP[@]}" install -q --upgrade pip
  "${PIP[@]}" install -q cmake ninja "${PY_PKGS[@]}"
fi
if ! "$PY" -c 'import cmake, ninja' 2>/dev/null; then
  "${PIP[@]}" install -q cmake ninja
fi
export PATH="$VENV/bin:$PATH"

# ggml's AMX path segfaults in ggml_backend_amx_mul_mat on this machine's CPU (Q4_K_M, first
# decode; llama.cpp issue 20824, closed without a fix). A native build turns AMX on wherever
# the CPU has it, so it is turned off explicitly: an explicit -mno-* wins over -march=native
# in GCC, and everything else (AVX-512, VNNI, BF16) stays native.
NO_AMX=""
if [ "$(uname -m)" = x86_64 ] && echo 'int main(void){return 0;}' \
    | gcc -x c -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -o /dev/null - 2>/dev/null; then
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
# The same flags for both builds: as an array for cmake, as one string (which scikit-build-core
# splits like a shell) for llama-cpp-python's CMAKE_ARGS.
LLAMA_CMAKE=(-DGGML_NATIVE=ON "-DCMAKE_C_FLAGS=$NO_AMX" "-DCMAKE_CXX_FLAGS=$NO_AMX")
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON '-DCMAKE_C_FLAGS=$NO_AMX' '-DCMAKE_CXX_FLAGS=$NO_AMX'"
STAMP="llama-cpp-python $LLAMA_CPP_PYTHON_VERSION ${LLAMA_CMAKE[*]}"

if [ "$(cat "$VENV/.llama-cpp-build" 2>/dev/null)" != "$STAMP" ] \
    || ! "$PY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
  log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION from its sdist (5-15 minutes on 2 cores)"
  # --no-cache-dir: pip would otherwise reuse a wheel it built earlier with other flags.
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "${PIP[@]}" install -q --no-cache-dir --force-reinstall --no-deps \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  # Its runtime dependencies, without touching what is already there.
  "${PIP[@]}" install -q "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  echo "$STAMP" >"$VENV/.llama-cpp-build"
fi

# --- llama.cpp tools from the same sdist ----------------------------------------------------
SDIST_DIR="$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
LLAMA_BUILD="$BUILD/llama.cpp"
if [ "$(cat "$LLAMA_BUILD/.stamp" 2>/dev/null)" != "$STAMP" ] \
    || [ ! -x "$LLAMA_BUILD/bin/llama-bench" ] || [ ! -x "$LLAMA_BUILD/bin/llama-quantize" ]; then
  if [ ! -d "$SDIST_DIR/vendor/llama.cpp" ]; then
    log "fetching the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist"
    tmp="$(mktemp -d)"
    "${PIP[@]}" download -q --no-deps --no-binary llama-cpp-python -d "$tmp" \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$CACHE"
    rm -rf "$tmp"
  fi
  log "building llama-bench and llama-quantize (5-10 minutes on 2 cores)"
  rm -rf "$LLAMA_BUILD"
  cmake -S "$SDIST_DIR/vendor/llama.cpp" -B "$LLAMA_BUILD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release "${LLAMA_CMAKE[@]}" -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF >"$BUILD/llama.cpp.cmake.log" 2>&1 \
    || { tail -30 "$BUILD/llama.cpp.cmake.log"; exit 1; }
  cmake --build "$LLAMA_BUILD" --target llama-bench llama-quantize -j "$(nproc)" \
    >"$BUILD/llama.cpp.build.log" 2>&1 || { tail -30 "$BUILD/llama.cpp.build.log"; exit 1; }
  echo "$STAMP" >"$LLAMA_BUILD/.stamp"
fi

# --- STREAM triad ---------------------------------------------------------------------------
STREAM_SRC="$ROOT/bench/peers/stream.c"
if [ ! -x "$BUILD/stream" ] || [ "$STREAM_SRC" -nt "$BUILD/stream" ]; then
  log "compiling the triad"
  gcc -O3 -fopenmp -march=native -o "$BUILD/stream" "$STREAM_SRC"
fi

log "ready: $("$PY" -c 'import torch, transformers, llama_cpp; print("torch", torch.__version__, "transformers", transformers.__version__, "llama-cpp-python", llama_cpp.__version__)')"
