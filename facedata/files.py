"""Files written whole or not at all, folders swapped in one step, room kept on a disk, and a full disk as one line.

Every writer of the package goes through here, so that a writer killed at any point (SIGKILL included) or stopped
by a full disk leaves each file with its old content or its new one, never a part. The temporary a write goes
through is hidden (``.<name>.<pid>-<hex>.tmp``, beside the file) and removed on any failure; only a kill can leave
one, which no reader opens, and the next write of the same file removes it once its process is gone.

A path is a local ``pathlib.Path`` or a ``universal_pathlib`` path on object storage, whose single PUT is atomic by
itself; object storage has no rename, no free space and no file system to reserve room on.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from facedata.errors import DiskFullError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
BLOCK_BYTES = 4096  # what one file takes at least on the usual local file systems (ext4, xfs, tmpfs pages)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a file system's "no space left" or "quota exceeded"."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def free_bytes(path: Any) -> int | None:
    """Bytes free for this user on the file system that holds ``path`` (or its nearest existing parent); None on
    object storage, which has no such figure."""
    if not isinstance(path, Path):
        return None
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def format_bytes(n_bytes: float) -> str:
    """A size for people: ``"7 MB"``, ``"148 kB"``, ``"1.2 GB"`` (decimal units, as ``df -H`` prints)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.1f} {unit}" if value < 10 and unit == "GB" else f"{value:.0f} {unit}"
    return f"{int(n_bytes)} B"


def disk_full_error(where: Any, writing: str, *, expected_bytes: int | None = None,
                    kept: str = "what was stored before is intact") -> DiskFullError:
    """The one-line error of a write that ran out of space: where, what, the room it needed, the room left and what
    is still sound."""
    free = free_bytes(where)
    parts = [f"expected room for about {format_bytes(expected_bytes)}"] if expected_bytes is not None else []
    if free is not None:
        parts.append(f"got {format_bytes(free)} free" if parts else f"{format_bytes(free)} free")
    room = f" ({', '.join(parts)})" if parts else ""
    return DiskFullError(f"{where}: disk full while writing {writing}{room}; {kept}")


@contextlib.contextmanager
def reporting_disk_full(where: Any, writing: str, *, expected_bytes: int | None = None,
                        kept: str = "what was stored before is intact") -> Iterator[None]:
    """Turn a "no space left" inside the block into ``disk_full_error(...)``; other errors pass unchanged.

    Raises:
        DiskFullError: the file system ran out of space (or quota) inside the block.
    """
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise disk_full_error(where, writing, expected_bytes=expected_bytes, kept=kept) from e


def write_bytes_atomic(path: Any, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a mix, and no temporary file is left
    behind whatever fails (an object PUT is atomic by itself).

    Raises:
        OSError: the write failed (a full disk: ``errno.ENOSPC``); the old file is untouched.
    """
    if not isinstance(path, Path):
        path.write_bytes(data)
        return
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write_whole(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_new_file(path: Any, data: bytes) -> None:
    """Write a file that no reader sees yet (inside a folder being staged, or a group being written on object
    storage, which its record marks complete): no temporary, no fsync, the folder made if needed.

    Raises:
        OSError: the write failed (a full disk: ``errno.ENOSPC``).
    """
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def remove_stale_temporaries(path: Path) -> int:
    """Delete the temporaries of ``path`` left by killed writers (their pid is gone from this machine). Returns how
    many were removed."""
    removed = 0
    prefix = f".{path.name}."
    try:
        siblings = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except FileNotFoundError:
        return 0
    for name in siblings:
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            (path.parent / name).unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of this machine has the id ``pid`` (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_and_exit(main: Callable[[], object]) -> NoReturn:
    """Run a command's ``main`` and end the process with its exit status, skipping the interpreter's teardown.

    The teardown is slow once polars is loaded (measured: ``python -c "import polars"`` 0.27 s, 0.19 s when it ends
    this way), a large part of a small command; nothing a command writes needs it, since every file here is written
    whole and closed before ``main`` returns (``write_bytes_atomic``), and stdout and stderr are flushed first. An
    exception other than ``SystemExit`` is left to the interpreter, which prints its traceback and tears down as
    usual. Only the installed commands end this way; ``main`` itself stays callable in a process that goes on
    (tests)."""
    try:
        main()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe has nothing left to flush
            stream.flush()
    os._exit(code)


def _write_whole(path: Path, data: bytes) -> None:
    """Write and flush to the disk (fsync), so that a rename that follows never exposes an empty file after a crash
    of the machine."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``): no moment exists where either
    name is missing. Returns False where the kernel, the C library or the file system cannot (nothing is changed
    then)."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def reserve_space(path: Path, n_bytes: int) -> bool:
    """Take ``n_bytes`` of the disk into the file ``path`` (blocks allocated, not a sparse file), so that deleting
    it later gives that room back for the small files that must be written at the end of a run. Returns False,
    leaving no file, where the room is not there.
    """
    try:
        with open(path, "wb") as f:
            allocate = getattr(os, "posix_fallocate", None)
            try:
                if allocate is None:
                    raise OSError(errno.EOPNOTSUPP, "no posix_fallocate")
                allocate(f.fileno(), 0, n_bytes)
            except OSError as e:
                if is_disk_full(e):
                    raise
                f.write(bytes(n_bytes))  # a file system without fallocate: zeros take the blocks all the same
        return True
    except OSError as e:
        path.unlink(missing_ok=True)
        if is_disk_full(e):
            return False
        raise


def block_bytes(n_bytes: int) -> int:
    """What a file of ``n_bytes`` takes on a local disk: whole blocks of ``BLOCK_BYTES``."""
    return -(-n_bytes // BLOCK_BYTES) * BLOCK_BYTES
