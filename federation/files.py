"""Writing a file so that a crash leaves either the old contents or the new, never a mixture.

Every file the federation rewrites in place (trust-list state, checkpoints, the auditor's saved
state, a node's saved match index) goes through ``write_atomic``, or ``replacing`` to write it
piece by piece: the bytes go to a temporary file beside the target, are fsynced, renamed over the
target, and the folder is fsynced so that the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def replacing(path: Path, *, mode: int = 0o600, final_mode: int | None = None) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` all at once, durably, when the block ends without
    an error (then it is fsynced, renamed over ``path`` and the folder fsynced); after an error
    ``path`` is untouched and the temporary file is gone.

    The temporary file has a name of this writer's own: two processes sharing a folder (broker
    replicas saving the same trust-list state, an import and a node saving the match index) must
    not rename each other's half-written file, or find it gone. It is created with ``mode``
    (under the umask) and given ``final_mode``, if any, just before the rename.
    """
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with open(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(descriptor)
            if final_mode is not None:
                os.fchmod(descriptor, final_mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_atomic(path: Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8), durably and all at once."""
    with replacing(path, mode=mode) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
