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
    "ruff>=0.6" "mypy>=1.11" "ziglang>=0.13" "auditwheel>=6" \
    "prometheus-client>=0.20" "pdoc>=15" "trustme>=1.2" \
    "pytest-asyncio>=1.4" "uvloop>=0.19"
# The distribution was called "gofast" before it became gofast-transport: drop
# an old install, whose files the new one would otherwise share.
if python -m pip show -q gofast >/dev/null 2>&1; then
    python -m pip uninstall -q -y gofast
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
