#!/usr/bin/env bash
# Create or update .venv-litellm: LiteLLM's proxy, the peer gateway of bench/gateway.py.
#
# It lives apart from .venv (it pins its own fastapi, pydantic and openai). Pinned to
# 1.82.6: never 1.82.7 or 1.82.8, both releases were compromised on PyPI. Idempotent: a
# stamp file records what was installed; a second run with nothing changed returns at once.
#
#   bench/litellm-env.sh                           # create / update (~1 minute)
#   .venv-litellm/bin/litellm --config CONFIG      # what bench/gateway.py starts
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${LITELLM_VENV:-$ROOT/.venv-litellm}"
PYTHON="${PYTHON:-python3.11}"

LITELLM="litellm[proxy]==1.82.6"
EXTRAS=("uvloop")

STAMP="$VENV/.chatapp-litellm-env"
WANT="v1 $LITELLM ${EXTRAS[*]}"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/litellm" ]]; then
    echo "litellm env up to date: $VENV"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$LITELLM" "${EXTRAS[@]}"

version="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
case "$version" in
    1.82.7 | 1.82.8)
        echo "litellm $version is a compromised release: removing $VENV" >&2
        rm -rf "$VENV"
        exit 1
        ;;
esac
echo "litellm $version in $VENV"
echo "$WANT" > "$STAMP"
