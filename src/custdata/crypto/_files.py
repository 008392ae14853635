"""Reading and writing files that hold key material (mode 0600)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

from pathlib import Path

from custdata._errors import ConfigurationError


__all__ = ["read_private_file", "write_private_file"]


def read_private_file(path: str | os.PathLike[str], *, what: str) -> str:
    """Return the text of a secret file after checking that only its owner can read it.

    Raises:
        ConfigurationError: The file is missing, unreadable, not UTF-8 text, or
            readable or writable by its group or others.
    """
    try:
        with Path(path).open(encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigurationError(
                    f"the {what} is accessible to group or others (mode {stat.S_IMODE(mode):04o}); "
                    "run chmod 600 on it",
                    path=os.fspath(path),
                )
            return fh.read()
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"the {what} is not UTF-8 text", path=os.fspath(path)
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the {what}: {exc.strerror}", path=os.fspath(path)
        ) from None


def write_private_file(
    path: str | os.PathLike[str], text: str, *, overwrite: bool = True
) -> None:
    """Write ``text`` to ``path`` atomically, readable by its owner only (mode 0600).

    The text goes to a temporary file in the same folder, created with mode 0600,
    flushed to disk and renamed over ``path``, so a crash never leaves a partly
    written key file and the key is never readable by others, not even briefly.

    Raises:
        FileExistsError: ``overwrite`` is false and ``path`` exists.
        OSError: The file cannot be written.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            Path(tmp).replace(target)
        else:
            # A hard link fails if the target exists, which makes "create only"
            # race-free; the temporary name is then removed.
            os.link(tmp, target)
            Path(tmp).unlink()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
