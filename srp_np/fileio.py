"""Atomic file writing: a file is either written whole or not at all."""
from __future__ import annotations

import os
import struct
import tempfile
import tokenize
import zipfile
import zlib
from pathlib import Path

from .errors import SrpError

#: What reading a corrupt zip / .npy / gzip stream can raise (all mean: a bad file).
#: (numpy parses a ``.npy`` header with ``tokenize`` and ``ast.literal_eval``: TokenError, SyntaxError.)
READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError,
               struct.error, RuntimeError, TypeError, LookupError, AttributeError, ArithmeticError,
               UnicodeDecodeError, SyntaxError, tokenize.TokenError)


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


def open_regular(path, what: str = "file"):
    """Open ``path`` for binary reading, refusing anything that is not a regular file.

    A FIFO, a device, a socket or a folder given as an input would block forever
    or read garbage; it is opened without blocking (``O_NONBLOCK``) and checked
    with ``fstat`` on the open descriptor (no race between check and open), then
    refused with an :class:`SrpError` (``os.stat`` refuses it first, so that such a file
    is normally not even opened). Returns an open binary file object.
    """
    import stat

    p = Path(path)
    if str(path) == "":
        raise SrpError(f"{what}: empty file name")

    def refuse_non_regular(st):
        if stat.S_ISDIR(st.st_mode):
            raise SrpError(f"{what} {p} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise SrpError(f"{what} {p} is not a regular file (a FIFO, device or socket): refused")

    try:
        refuse_non_regular(os.stat(p))     # never even open a device or FIFO (opening can have effects)
        fd = os.open(str(p), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SrpError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise SrpError(f"{what} {p} is a directory, not a file") from None
    except (OSError, ValueError) as e:       # ValueError: a NUL byte in the name
        raise SrpError(f"cannot open {what} {p!r}: {getattr(e, 'strerror', None) or e}") from None
    try:
        refuse_non_regular(os.fstat(fd))   # the file opened is the one checked (no race)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def npy_member_header(zf, info):
    """(shape, dtype) of one ``.npy`` member, reading only its header (nothing is decompressed
    beyond it)."""
    import numpy as np
    from numpy.lib import format as npf

    with zf.open(info) as m:
        version = npf.read_magic(m)
        if version == (1, 0):
            shape, _fortran, dtype = npf.read_array_header_1_0(m)
        elif version == (2, 0):
            shape, _fortran, dtype = npf.read_array_header_2_0(m)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), np.dtype(dtype)


def read_npy_member(zf, info):
    """One ``.npy`` member of an open zip (``allow_pickle=False``)."""
    from numpy.lib import format as npf

    with zf.open(info) as m:
        return npf.read_array(m, allow_pickle=False)
