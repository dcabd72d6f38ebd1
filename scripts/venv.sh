# Sourced by scripts/dev and scripts/test: make .venv on first use, and reinstall when
# pyproject.toml changes. Needs only Python 3.11 or newer on the PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extras="$1"
if [ ! -x .venv/bin/python ]; then
    py=""
    for candidate in python3.13 python3.12 python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            py=$candidate
            break
        fi
    done
    if [ -z "$py" ]; then
        echo "mailprov needs Python 3.11 or newer on the PATH" >&2
        exit 1
    fi
    "$py" -m venv .venv
fi
stamp=".venv/.installed-$extras-$(cksum < pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
    rm -f .venv/.installed-"$extras"-*
    touch "$stamp"
fi
