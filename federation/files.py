"""Writing a file so that a crash leaves either the old contents or the new, never a mixture.

Every file the federation rewrites in place (trust-list state, checkpoints, the auditor's saved
state) goes through ``write_atomic``: the bytes go to a temporary file beside the target, are
fsynced, renamed over the target, and the folder is fsynced so that the rename itself survives
a power cut.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8), durably and all at once."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    # A temporary name of this writer's own: two processes sharing a folder (broker replicas saving
    # the same trust-list state) must not rename each other's half-written file, or find it gone.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with open(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
