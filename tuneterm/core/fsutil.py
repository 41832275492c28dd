"""Small file-system primitives that keep files whole: atomic writes, folders built under a lock and
renamed into place, content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file handle whose content replaces ``path`` only if the ``with`` block finishes.

    Readers see the old file or the new one, never half of one; on an error the old file is
    left as it was and the temporary file is removed. ``mode`` is "w" (UTF-8 text) or "wb".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def lock_path(target: Path) -> Path:
    """The lock file that guards ``target``: a hidden sibling, ``.<name>.lock``."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


@contextmanager
def building_dir(target: Path, is_complete=None, timeout: float = -1) -> Iterator[Path | None]:
    """Build the folder ``target`` in a hidden temporary folder beside it and rename it into place.

    The whole build runs under a file lock (``filelock``) on ``.<name>.lock``, so a second
    process waits for the first and then finds the finished folder: it never reads half of one.
    Yields the temporary folder to fill, or None when ``target`` is already complete
    (``is_complete(target)``, by default: it exists). On an error the temporary folder is removed
    and ``target`` is left as it was.
    """
    from filelock import FileLock

    target = Path(target)
    done = is_complete or (lambda p: p.exists())
    if done(target):
        yield None
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path(target)), timeout=timeout):
        if done(target):  # another process built it while we waited
            yield None
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            yield tmp
            if target.exists():  # a half-written or stale folder from before locks existed
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
