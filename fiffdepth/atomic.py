"""Atomic writes: a reader (or a crash) never sees half a file or half a directory.

Files are written beside their target under a temporary name and moved into place with
``os.replace``; directories (models, checkpoints, caches) are built in a temporary directory
next to their target and swapped in by rename. Everything that fiffdepth writes for later
reading — results, configs, pseudo-labels, figures, checkpoints, latent caches — goes
through here.

A directory that must arrive intact (a model, a checkpoint) also carries ``manifest.json``:
the sha256 of each of its files, written last by ``write_manifest`` and checked by
``verify_manifest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path`` (same suffix, so writers that
    infer the format from it still work), then move it into place. On failure ``path`` is left
    as it was and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, data, indent: int = 2) -> Path:
    """JSON with ``default=str`` (paths, numpy scalars' reprs) and a trailing newline."""
    return write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def replace_dir(tmp: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Move the finished directory ``tmp`` to ``directory``, replacing what was there: the old
    one is renamed aside first and removed only after the new one is in place."""
    tmp, directory = Path(tmp), Path(directory)
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


@contextmanager
def staged_dir(directory: str | os.PathLike, prefix: str | None = None,
               commit: Callable[[Path, Path], object] = replace_dir) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``directory``; when the block ends without an
    exception, ``commit(tmp, directory)`` moves it into place (default: ``replace_dir``). On an
    exception (a kill's KeyboardInterrupt included) the temporary directory is removed and
    ``directory`` is untouched."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        commit(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


MANIFEST = "manifest.json"


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(directory: str | os.PathLike, extra: dict | None = None, fsync: bool = False) -> Path:
    """``directory/manifest.json``: ``{**extra, "files": {relative path: sha256}}`` over every file
    in ``directory`` (the manifest itself excluded). ``fsync``: flush each file to disk first."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    digests = {p.relative_to(directory).as_posix(): sha256(p) for p in files}
    man = directory / MANIFEST
    man.write_text(json.dumps({**(extra or {}), "files": digests}, indent=2))
    if fsync:
        for p in [*files, man]:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    return man


def verify_manifest(directory: str | os.PathLike, required: bool = True) -> str | None:
    """None when every file listed in ``directory/manifest.json`` is there with its checksum, else
    the first problem, naming the file. Without a manifest: a problem when ``required``."""
    directory = Path(directory)
    man = directory / MANIFEST
    if not man.is_file():
        return f"{man}: missing (half-written)" if required else None
    try:
        files = json.loads(man.read_text())["files"]
    except (ValueError, KeyError, TypeError) as err:
        return f"{man}: unreadable ({err})"
    for rel, digest in files.items():
        f = directory / rel
        if not f.is_file():
            return f"{f}: missing"
        if sha256(f) != digest:
            return f"{f}: checksum mismatch (corrupt or modified since it was saved)"
    return None
