# Sourced by scripts/demo and scripts/test: make .venv with everything the project needs.
# Only Python 3.11 is required on the machine. Idempotent: re-installs only when pyproject.toml
# or the torch spec changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# torch first, pinned: a looser spec pulls gigabytes of CUDA wheels. GPU machines override it,
# e.g. TORCH_SPEC="torch==2.13.0" TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 FBGEMM_SPEC="fbgemm-gpu==1.8.0"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
# TorchRec 1.8 matches torch 2.13. Its metadata requires the CUDA-named `fbgemm-gpu`, so FBGEMM is installed
# explicitly (the CPU build by default) and torchrec with --no-deps; its other dependencies are in pyproject.toml.
FBGEMM_SPEC="${FBGEMM_SPEC:-fbgemm-gpu-cpu==1.8.0}"
TORCHREC_SPEC="${TORCHREC_SPEC:-torchrec==1.8.0}"
PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
STAMP="$VENV/.dml-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC ${TORCH_INDEX_URL:-} $FBGEMM_SPEC $TORCHREC_SPEC"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  echo "==> installing $TORCH_SPEC, $FBGEMM_SPEC, $TORCHREC_SPEC, then discord_ml[test] (editable)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  "$VENV/bin/python" -m pip install --quiet "$FBGEMM_SPEC" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
  "$VENV/bin/python" -m pip install --quiet --no-deps "$TORCHREC_SPEC"
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  echo "$want" > "$STAMP"
fi

export PATH="$VENV/bin:$PATH"
# Project-local Dagster instance: state under .dagster/, configured by the top-level dagster.yaml.
export DAGSTER_HOME="$ROOT/.dagster"
mkdir -p "$DAGSTER_HOME"
cp "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
# Platform state (local cluster registry, tokens) stays inside the project too.
export DML_HOME="${DML_HOME:-$ROOT/.dagster/dml}"
export RAY_USAGE_STATS_ENABLED=0
