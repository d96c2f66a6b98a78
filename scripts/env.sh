# Sourced by the other scripts: makes (once) and enters the project's virtualenv
# with everything the build and the tests need. Rust comes from rustup, which
# every machine here has; nothing else is assumed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check --upgrade pip
python -m pip install -q --disable-pip-version-check \
    "maturin>=1.7,<2" "cbor2>=5.6" "pytest>=8" "pytest-benchmark>=4" "pytest-timeout>=2.3" \
    "ruff>=0.6" "mypy>=1.11" "pdoc>=15"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
