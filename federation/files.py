"""Writing a file so that a crash leaves either the old contents or the new, never a mixture.

Every file the federation rewrites in place (trust-list state, checkpoints, the auditor's saved
state) goes through ``write_atomic``: the bytes go to a temporary file beside the target, are
fsynced, renamed over the target, and the folder is fsynced so that the rename itself survives
a power cut.
"""

from __future__ import annotations

import os
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
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(descriptor, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)
