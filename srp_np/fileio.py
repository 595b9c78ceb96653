"""Atomic file writing: a file is either written whole or not at all."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import SrpError


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)``, then move the finished file to ``path``.

    The temporary file lives in the destination folder (so the final rename is
    atomic) and gets the usual permissions (0666 minus the umask). On any
    error the temporary file is removed and ``path`` is left untouched.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise SrpError(f"cannot write {p}: folder {parent} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=str(parent), prefix=f".{p.name}.", suffix=p.suffix or ".tmp")
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        write(tmp)
        os.replace(tmp, p)
    except OSError as e:
        raise SrpError(f"cannot write {p}: {e.strerror or e}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
