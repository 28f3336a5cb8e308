"""Write a file whole or not at all: a temporary file in the target's folder, then one `os.replace`.

A reader (or a resumed run after a kill) sees either the old file or the new one, never half of
one. The temporary file sits in the target's folder because a rename is atomic only within one
file system, and its name carries the process id and a random part, so that two processes writing
the same target never share one. On any error the temporary file is removed and the target is
left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import IO, Any, Iterator

__all__ = ["atomic_path", "open_atomically", "write_text_atomically", "write_bytes_atomically"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a fresh temporary path next to `path`; on a clean exit it replaces `path`.

    For writers that want a file name rather than a handle (`safetensors.torch.save_file`).

    Args:
        path: The file to write; its folder must exist.

    Yields:
        The temporary path. It exists, empty, when yielded: it is
        created with `O_EXCL`, so no other writer holds the same name, and with the permissions
        `open` would give (not `mkstemp`'s owner-only ones), so the replaced file keeps them.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    while True:
        temporary = os.path.join(folder, f"{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # a leftover of a killed writer with the same pid: draw again
            continue
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


@contextlib.contextmanager
def open_atomically(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """`open(path, mode, **open_kwargs)` on a temporary file that replaces `path` once closed without error.

    Args:
        path: The file to write; its folder must exist.
        mode: A writing mode of `open` ("w", "wb", ...).
        **open_kwargs: Passed to `open` (`encoding`, `newline`, ...).

    Yields:
        The open handle.
    """
    with atomic_path(path) as temporary:
        with open(temporary, mode, **open_kwargs) as handle:
            yield handle


def write_text_atomically(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Replace `path` with `text` whole (see `open_atomically`).

    Args:
        path: The file to write.
        text: Its new content.
        encoding: The text encoding.
    """
    with open_atomically(path, "w", encoding=encoding) as handle:
        handle.write(text)


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` whole (see `open_atomically`).

    Args:
        path: The file to write.
        data: Its new content.
    """
    with open_atomically(path, "wb") as handle:
        handle.write(data)
