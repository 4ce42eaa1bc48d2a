"""Files an ACP agent asks the client to read or write (``fs/read_text_file``,
``fs/write_text_file``), confined to one directory: the Jupyter server's root dir.

A path is resolved the way the operating system would follow it (``..`` and every symlink),
and refused unless what it reaches lies inside the root: an absolute path elsewhere, a ``..``
that climbs out, a symlink that points out. A notebook (``.ipynb``) is written through
Jupyter's ContentsManager, as the notebook editor saves it (validated, in Jupyter's own way of
writing), never as raw bytes; without real-time collaboration an open editor sees such a write
as "file changed on disk", as it would for any other program's write.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Optional

from jupyter_core.utils import ensure_async

# ACP's JSON-RPC error codes: -32002 is "resource not found"; the others are JSON-RPC's own.
NOT_FOUND = -32002
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class FileRefused(Exception):
    """A file request that is not carried out; ``code`` and the message go back to the agent."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Files:
    """Reads and writes inside ``root``; ``contents_manager`` (or, when None, one of Jupyter's
    own file managers over ``root``) saves notebooks."""

    def __init__(self, root: str, max_bytes: int, contents_manager=None):
        self.root = os.path.realpath(root)
        self.max_bytes = max_bytes
        self._contents_manager = contents_manager

    def resolve(self, path: str) -> str:
        """The real path ``path`` reaches, or :class:`FileRefused` when that is outside the
        root. A relative path is taken from the root (ACP sends absolute ones)."""
        if not isinstance(path, str) or not path or "\0" in path:
            raise FileRefused(INVALID_PARAMS, "not a file path")
        real = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([self.root, real]) != self.root:
            raise FileRefused(
                INVALID_PARAMS,
                f"{path} is outside the directory this client lets agents use ({self.root})",
            )
        return real

    # -- reading --------------------------------------------------------------------------

    def read(self, path: str, line: Optional[int] = None, limit: Optional[int] = None) -> str:
        """The text of a file, from 1-based ``line`` and at most ``limit`` lines (blocking:
        run it in a thread)."""
        real = self.resolve(path)
        try:
            # O_NOFOLLOW: a symlink put in place since resolve() is not followed out.
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise FileRefused(NOT_FOUND, f"no such file: {path}") from None
        except OSError as e:
            raise FileRefused(INTERNAL_ERROR, f"cannot read {path}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if not os.path.isfile(real):
                raise FileRefused(INVALID_PARAMS, f"{path} is not a file")
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise FileRefused(
                INVALID_PARAMS, f"{path} is larger than {self.max_bytes:,} bytes, the most read"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FileRefused(INVALID_PARAMS, f"{path} is not UTF-8 text") from None
        if line is None and limit is None:
            return text
        lines = text.splitlines(keepends=True)
        start = max((line or 1) - 1, 0)
        end = len(lines) if limit is None else start + max(limit, 0)
        return "".join(lines[start:end])

    # -- writing --------------------------------------------------------------------------

    async def write(self, path: str, content: str) -> None:
        """Write ``content`` to ``path``; a notebook goes through the ContentsManager."""
        real = self.resolve(path)
        if len(content.encode("utf-8", "surrogatepass")) > self.max_bytes:
            raise FileRefused(
                INVALID_PARAMS, f"the text for {path} is larger than {self.max_bytes:,} bytes"
            )
        if os.path.isdir(real):
            raise FileRefused(INVALID_PARAMS, f"{path} is a directory")
        if real.endswith(".ipynb"):
            await self._save_notebook(path, real, content)
        else:
            await asyncio.to_thread(_write_text, real, content)

    async def _save_notebook(self, path: str, real: str, content: str) -> None:
        import nbformat

        try:
            nb = nbformat.reads(content, as_version=4)
        except Exception as e:  # not JSON, or not a notebook
            raise FileRefused(INVALID_PARAMS, f"{path} is not a valid notebook: {e}") from None
        for cell in nb.get("cells", []):
            # Trust is the user's to give: a notebook an agent wrote is not signed on the
            # agent's word that its cells are trusted (its outputs could run script).
            if isinstance(cell.get("metadata"), dict):
                cell["metadata"].pop("trusted", None)
        cm = self.contents_manager()
        cm_root = os.path.realpath(cm.root_dir)
        if os.path.commonpath([cm_root, real]) != cm_root:
            raise FileRefused(
                INVALID_PARAMS, f"{path} is outside the directory Jupyter saves notebooks in"
            )
        api_path = os.path.relpath(real, cm_root).replace(os.sep, "/")
        model = {"type": "notebook", "format": "json", "content": nb}
        try:
            await ensure_async(cm.save(model, api_path))
        except Exception as e:  # the manager's own refusal (hidden file, no space, ...)
            reason = getattr(e, "log_message", None) or str(e) or type(e).__name__
            raise FileRefused(INTERNAL_ERROR, f"cannot save {path}: {reason}") from None

    def contents_manager(self):
        if self._contents_manager is None:
            from jupyter_server.services.contents.filemanager import FileContentsManager

            self._contents_manager = FileContentsManager(root_dir=self.root)
        return self._contents_manager


def _write_text(real: str, content: str) -> None:
    """Write through a temporary file renamed over the target: a reader never sees half a
    file, and a full disk leaves the old one whole. An existing file keeps its permissions; a
    new one gets those the umask gives (blocking: run it in a thread)."""
    folder, name = os.path.split(real)
    tmp = os.path.join(folder, f".~{name}.{secrets.token_hex(4)}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        mode = os.stat(real).st_mode & 0o7777 if os.path.exists(real) else None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise FileRefused(INTERNAL_ERROR, f"cannot write {real}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(content)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, real)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise FileRefused(INTERNAL_ERROR, f"cannot write {real}: {e.strerror}") from None
