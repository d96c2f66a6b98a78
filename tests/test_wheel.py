"""The distributions `scripts/wheel` builds, as a user gets them: the sdist
builds a wheel; the wheel is one abi3 manylinux wheel with a stripped .so and
full metadata, installs into a fresh venv, imports and talks over 127.0.0.1.

Slow (a release build, from the sdist): one build per test session.
"""

from __future__ import annotations

import email.parser
import json
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parent.parent
DIST = "gofast-transport"
VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]

# The build, a venv and pip fetching cbor2 can outlast the suite's 120 s.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Built:
    wheel: Path
    sdist: Path
    venv_python: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([str(ROOT / "scripts" / "wheel"), "--out", str(out)], check=True, timeout=840)
    wheels = sorted(out.glob("*.whl"))
    sdists = sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheels[0])],
        check=True,
        timeout=300,
    )
    return Built(wheels[0], sdists[0], py)


def test_one_abi3_manylinux_wheel_for_every_cpython_from_311(built: Built) -> None:
    name = built.wheel.name
    assert name.startswith(f"gofast_transport-{VERSION}-cp311-abi3-"), name
    assert "manylinux_2_17_x86_64" in name, name
    with zipfile.ZipFile(built.wheel) as z:
        wheel_meta = z.read(f"gofast_transport-{VERSION}.dist-info/WHEEL").decode()
    tags = re.findall(r"^Tag: (\S+)$", wheel_meta, re.M)
    assert "cp311-abi3-manylinux_2_17_x86_64" in tags, wheel_meta
    # auditwheel's own reading of the symbols the .so needs from glibc.
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(built.wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert re.search(
        r'consistent with the following platform tag:\s+"manylinux_2_17_x86_64"', shown
    )


def test_native_module_is_stripped(built: Built, tmp_path: Path) -> None:
    with zipfile.ZipFile(built.wheel) as z:
        [so] = [n for n in z.namelist() if n.endswith(".so")]
        assert so == "gofast/_native.abi3.so"
        path = Path(z.extract(so, tmp_path))
    with path.open("rb") as f:
        sections = {s.name for s in ELFFile(f).iter_sections()}
    assert not {n for n in sections if n.startswith(".debug")}, sections
    assert ".symtab" not in sections, "symbol table not stripped"
    # Stripped: about 2.9 MB, most of it rustls, ring and x509-parser (TLS);
    # with debug info it would be several times that.
    assert path.stat().st_size < 4_000_000


def test_metadata(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as z:
        info = f"gofast_transport-{VERSION}.dist-info"
        meta = email.parser.Parser().parsestr(z.read(f"{info}/METADATA").decode())
        license_text = z.read(f"{info}/licenses/LICENSE").decode()
    assert meta["Name"] == DIST
    assert meta["Version"] == VERSION
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert license_text.startswith("MIT License")
    classifiers = meta.get_all("Classifier") or []
    for minor in (11, 12, 13, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert meta.get_all("Project-URL")
    assert any(r.startswith("cbor2") for r in meta.get_all("Requires-Dist") or [])


def test_sdist_carries_what_a_build_needs(built: Built) -> None:
    assert built.sdist.name == f"gofast_transport-{VERSION}.tar.gz"
    with tarfile.open(built.sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "LICENSE", "src/lib.rs"):
        assert needed in names, needed
    assert "python/gofast/__init__.py" in names


ROUND_TRIP = """
import importlib.metadata, json, threading
import gofast

with gofast.listen(("127.0.0.1", 0)) as lis:
    got = {}
    th = threading.Thread(target=lambda: got.update(t=lis.accept(name="server", timeout=10)))
    th.start()
    client = gofast.Transport.connect(lis.address, name="client")
    th.join(10)
server = got["t"]
server.subscribe(101, lambda s, m: s.respond(gofast.BinMessage(101, m.data[::-1])))
hs = threading.Thread(target=server.handshake, args=(10.0,))
hs.start()
client.handshake(10.0)
hs.join(10)
reply = client.request(gofast.BinMessage(101, b"ping"), timeout=10)
client.close()
server.close()
print(json.dumps({
    "file": gofast.__file__,
    "version": gofast.__version__,
    "dist_version": importlib.metadata.version("gofast-transport"),
    "reply": reply.data.decode(),
}))
"""


def test_installs_into_a_fresh_venv_and_talks(built: Built, tmp_path: Path) -> None:
    # cwd away from the checkout, so only the installed package can be imported.
    out = subprocess.run(
        [str(built.venv_python), "-c", ROUND_TRIP],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    ).stdout
    got = json.loads(out)
    assert got["file"].startswith(str(built.venv_python.parent.parent)), got["file"]
    assert got["version"] == got["dist_version"] == VERSION
    assert got["reply"] == "gnip"
