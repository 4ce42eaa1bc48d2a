"""Noticing that the database file was deleted, replaced or made read-only under us.

SQLite keeps writing through its open file handle after the file's name was unlinked or
pointed at another file, and as root it ignores permission bits: every write would then
succeed into a file that the next start will not find. So the store pins the file's identity
when it opens it and checks the name before each batch of writes (and after its commit) and
before each read: a few microseconds of ``stat`` against a transaction's fsync.
"""

from __future__ import annotations

import os
import stat
from typing import Optional


class FileGuard:
    def __init__(self, path: str):
        self.path = path
        self._identity: Optional[tuple] = None

    def pin(self) -> None:
        """Remember the file now at ``path`` as the database."""
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)

    def problem(self, writing: bool) -> Optional[str]:
        """Why the database cannot be used now, or None when it can."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"the chat database {self.path} was deleted"
        except OSError as e:
            return f"the chat database {self.path} cannot be reached: {e}"
        if self._identity is not None and (st.st_dev, st.st_ino) != self._identity:
            return f"the chat database {self.path} was replaced by another file"
        if writing:
            return self.read_only(st)
        return None

    def read_only(self, st: Optional[os.stat_result] = None) -> Optional[str]:
        st = st or os.stat(self.path)
        # Root may write whatever the mode says; a file with no write bit at all was still made
        # read-only on purpose, so it is honoured for everyone.
        if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return f"the chat database {self.path} is read-only (mode {stat.filemode(st.st_mode)})"
        if not os.access(self.path, os.W_OK):
            return f"the chat database {self.path} is read-only for this user"
        return None
