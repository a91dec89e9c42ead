#!/usr/bin/env bash
# Creates the venv with Python 3.10 (PATH, then pyenv, then uv's own download) and installs the
# pinned stack from requirements.lock with uv, then this project in editable mode.
set -euo pipefail
VENV="${1:-.venv}"

if ! command -v uv >/dev/null 2>&1; then
  echo "uv not found: installing it with pip (pip install --user uv)" >&2
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

find_python() {
  local candidate
  for candidate in python3.10 "$(command -v pyenv >/dev/null 2>&1 && echo "$(pyenv root)/versions/3.10.13/bin/python")"; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local v
    v="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$)' | tail -1 || true)"
    if [ -n "$v" ]; then echo "$(pyenv root)/versions/$v/bin/python"; return 0; fi
  fi
  echo "3.10"  # let uv find or fetch one
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then
  PYTHON="$(find_python)"
  echo "Creating $VENV with Python 3.10 ($PYTHON)" >&2
  rm -rf "$VENV"
  uv venv --quiet --seed -p "$PYTHON" "$VENV"  # --seed: TFX pip-installs its user-code wheels
fi
echo "Installing the pinned stack into $VENV (uv, about a minute the first time)" >&2
# --compile-bytecode: every process (a pipeline run starts many) then loads TF and TFX from .pyc
# instead of compiling ~7,000 modules, even where PYTHONDONTWRITEBYTECODE is set.
uv pip install --quiet --compile-bytecode -p "$VENV/bin/python" -r requirements.lock
# Editable: setup.py maps pipeline/ and components/ into the `fakedetect` package, which
# setuptools' editable finder resolves to this checkout.
uv pip install --quiet -p "$VENV/bin/python" --no-deps -e .
