"""Write files atomically: the one implementation every stage uses.

A file is written to a temporary file in the destination's folder (same file system, so the
rename is atomic), flushed and fsync'ed, then ``os.replace``'d over the destination, and the
folder is fsync'ed so the rename survives a power cut. A crash leaves the old file or the new
one, never half of one. Temporary names carry the writer's pid::

    .<destination name>.<pid>.<random>.rnnstream-tmp

On failure (an exception, KeyboardInterrupt included) the temporary file is removed and the
destination is untouched. Only a writer killed outright (SIGKILL, power loss) leaves its temp
file behind; the next write of the same destination sweeps those whose pid is gone.

:func:`write_file` writes one file from a callback; :func:`write_files` writes several
(the exporter's model, step graph and sidecar): every temp file is written and fsync'ed first,
then all are replaced in order, so a failure before the replaces changes nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from typing import IO, TypeVar, cast

__all__ = ["TEMP_SUFFIX", "write_bytes", "write_file", "write_files"]

TEMP_SUFFIX = ".rnnstream-tmp"

Writer = Callable[[IO[bytes]], None]
P = TypeVar("P", bound="str | os.PathLike[str]")


def write_file(path: str | os.PathLike[str], write: Writer) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, then move it over ``path``."""
    write_files({path: write})


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    write_files({path: data})


def write_files(files: Mapping[P, bytes | Writer]) -> None:
    """Write every file (bytes, or a callback that writes to the open file) to a temp file in
    its folder and fsync it; only then replace the destinations, in the order given."""
    temps: list[tuple[str, str]] = []
    try:
        for name, content in files.items():
            dest = os.fspath(cast("str | os.PathLike[str]", name))
            temps.append((_write_temp(dest, content), dest))
        for tmp, dest in temps:
            os.replace(tmp, dest)
    finally:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):  # replaced: gone already
                os.unlink(tmp)
    for folder in dict.fromkeys(_folder(dest) for _, dest in temps):
        _fsync_dir(folder)


def _folder(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def _write_temp(dest: str, content: bytes | Writer) -> str:
    import tempfile  # only when writing: keeps `import rnnstream.runtime` light

    folder = _folder(dest)
    prefix = _temp_prefix(dest)
    _sweep_dead_temps(folder, prefix)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, (bytes, bytearray, memoryview)):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def _sweep_dead_temps(folder: str, prefix: str) -> None:
    """Remove temp files of this destination left by writers killed mid-write (pid gone).

    A SIGKILL inside a write leaves its temp file behind (the destination itself is intact: it
    is only ever replaced by a rename). Without this sweep a process that crashes repeatedly
    over months would pile them up. A live pid (another process writing the same file right
    now) is left alone.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):  # another sweeper may have removed it first
                os.unlink(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # Windows' os.kill(pid, 0) would kill it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _fsync_dir(folder: str) -> None:
    """Make the rename durable (POSIX); Windows cannot open folders, and needs no such step."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
