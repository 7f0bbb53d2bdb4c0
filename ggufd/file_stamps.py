"""A model file's identity and version, from one ``os.stat``: how ggufd notices that a file changed.

A :class:`FileStamp` is the device, inode, size, mtime and ctime of a file. Two stamps of the same
path that differ mean the file changed; :meth:`FileStamp.same_file` tells the two ways apart:

- another inode: the path was pointed at a new file (``mv new.gguf model.gguf``, rsync's default,
  most downloaders). The old file lives on while it is open or mapped, so a model loaded from it
  stays valid;
- the same inode with another size, mtime or ctime: the file was written in place (``cp`` over it,
  ``rsync --inplace``, a truncate). Memory-mapped weights of a loaded model now read the new bytes,
  or fault where the file got shorter.

ctime is part of the stamp because it also moves when the mode changes (``chmod``) and when a
writer resets the mtime (``cp -p``, ``rsync -t``). The check is a ``stat`` call, microseconds on a
local disk; ggufd polls it (README "Updating a model file" says why not inotify).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileStamp:
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    def same_file(self, other: FileStamp | None) -> bool:
        """Whether ``other`` is the same inode (changed in place, if it differs at all)."""
        return other is not None and (self.device, self.inode) == (other.device, other.inode)


def file_stamp(path: str | os.PathLike[str] | Path) -> FileStamp | None:
    """The file's stamp now; ``None`` when it cannot be stat'ed (gone, no permission on its folder)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def changed_in_place(loaded: FileStamp | None, now: FileStamp | None) -> bool:
    """The dangerous change: the loaded inode itself was written or truncated."""
    return loaded is not None and loaded != now and loaded.same_file(now)
