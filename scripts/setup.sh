#!/usr/bin/env bash
# Set up egaku in ./.venv: a virtual environment, PyTorch 2.13.0 (CPU build) if no torch is
# installed there yet, then egaku itself (editable). `--test` adds the test dependencies.
#   ./scripts/setup.sh            # then: .venv/bin/egaku generate "a red circle on the left, blue background"
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build. A torch the
# user already installed in .venv (a CUDA build, say) is kept.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
echo "egaku is set up in .venv ($(.venv/bin/egaku --version))" >&2
