#!/usr/bin/env bash
# The whole GPU check of the generation path, one command on a bare GPU machine with no network
# (about 8 minutes on an H100/H200); its phases in order of importance, each under its own
# timeout, the figures written to $OUT/gpu_check.json after every phase (and every decode cell):
#   model   a random stand-in of Qwen3-8B (the real Qwen2/Qwen3 vocabulary and template)
#   decode  tokens/s, compiled and eager (the "before"), batch 1 / 32 / 8, NF4 then bf16
#   train   a 2-step desktop-shaped `train`, compiled then eager: time split, GPU busy, memory
#   mixed   policy and simulator rows in one batch against a batch of each
#
#   bash benchmarks/gpu_check.sh --prepare   # here, with PyPI: fills wheels/ (git-ignored)
#   bash benchmarks/gpu_check.sh             # there, with wheels/ carried beside the code
#   bash benchmarks/gpu_check.sh --tiny      # a CPU check of the same code, no NF4 (a test runs it)
#
# The GPU machine has Python 3.12, torch, transformers, peft, accelerate, triton, nvidia-ml-py
# and lacks the rest; --prepare downloads these as cp312 manylinux wheels, with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d wheels $WHEELS
# (bitsandbytes without its CUDA 11/12, ROCm and XPU libraries: 7 MB instead of 43), and writes
# wheels/qwen3-tokenizer/: the Qwen2 vocabulary of llama-cpp-python's source distribution with
# Qwen3's added tokens and published chat template.
set -u
cd "$(dirname "$0")/.."
WHEELS="bitsandbytes==0.50.2 llguidance==1.9.1 pydantic pydantic-core annotated-types typing-inspection
typing_extensions sqlite-utils sqlite-fts4 click-default-group orjson asyncio-throttle jsonschema
jsonschema-specifications referencing rpds-py jsonref tabulate python-dateutil pluggy"
TINY="" PREPARE=0
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY="--tiny" ;;
    --prepare) PREPARE=1 ;;
    *) echo "gpu_check.sh: unknown argument $arg (--tiny, --prepare)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$(command -v python3 || command -v python)}

if [ "$PREPARE" = 1 ]; then
  set -e
  mkdir -p wheels
  # shellcheck disable=SC2086
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels $WHEELS
  "$PY" - <<'EOF'
import glob, re, zipfile, os
for wheel in glob.glob("wheels/bitsandbytes-*.whl"):  # keep the CUDA 13 library alone
    slim = wheel + ".slim"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if not re.search(r"libbitsandbytes_(cuda1[0-2]\d|rocm|xpu|cpu)", item.filename):
                dst.writestr(item, src.read(item.filename))
    os.replace(slim, wheel)
EOF
  tmp=$(mktemp -d)
  "$PY" -m pip download llama-cpp-python --no-binary :all: --no-deps -d "$tmp"
  tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" --wildcards '*/models/ggml-vocab-qwen2.gguf' \
    '*/models/templates/Qwen-Qwen3-0.6B.jinja'
  "$PY" - "$tmp" <<'EOF'
import glob, sys
from transformers import AutoTokenizer
models = glob.glob(sys.argv[1] + "/*/vendor/llama.cpp/models")[0]
tok = AutoTokenizer.from_pretrained(models, gguf_file="ggml-vocab-qwen2.gguf")
tok.add_tokens(["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"])
tok.chat_template = open(models + "/templates/Qwen-Qwen3-0.6B.jinja").read()
tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
tok.save_pretrained("wheels/qwen3-tokenizer")
print(f"wheels/qwen3-tokenizer: {len(tok)} tokens")
EOF
  rm -rf "$tmp"
  du -sh wheels
  exit 0
fi

OUT_DIR=${OUT:-runs/gpu_check}
mkdir -p "$OUT_DIR"
RESULT="$OUT_DIR/gpu_check.json"
rm -f "$RESULT"
WORK=$(mktemp -d)
TOKENIZER=()
if [ -z "$TINY" ]; then
  if ! "$PY" -c "import bitsandbytes, llguidance, pydantic, sqlite_utils, orjson, asyncio_throttle, jsonschema" 2>/dev/null; then
    "$PY" -m pip install --no-index --no-deps --quiet --target "$WORK/site" wheels/*.whl || exit 2
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  [ -d wheels/qwen3-tokenizer ] && TOKENIZER=(--tokenizer wheels/qwen3-tokenizer)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

phase() {  # name, timeout in seconds (the tiny check gets the same)
  local name=$1 limit=$2 start rc
  start=$(date +%s)
  timeout -k 10 "$limit" "$PY" benchmarks/gpu_check.py "$name" --work "$WORK" --out "$RESULT" $TINY \
    "${TOKENIZER[@]}" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  "$PY" - "$RESULT" "$name" "$rc" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys
from pathlib import Path
path, name, rc, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
result = json.loads(path.read_text()) if path.is_file() else {}
result.setdefault("phases", {})[name] = {"exit": rc, "seconds": seconds, "timed_out": rc in (124, 137)}
path.write_text(json.dumps(result, indent=2))
EOF
  echo "phase $name: exit $rc in $(( $(date +%s) - start )) s (log: $OUT_DIR/$name.log)"
  tail -n 3 "$OUT_DIR/$name.log"
  return "$rc"
}

phase model 90 || { echo "gpu_check.sh: no stand-in model, nothing else can run" >&2; exit 1; }
phase decode 200
phase train 150
phase mixed 40
"$PY" benchmarks/gpu_check.py table --out "$RESULT"
rm -rf "$WORK"
