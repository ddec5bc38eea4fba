"""sbx.files: the sandbox's filesystem, as its code sees it."""

from __future__ import annotations

import io
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Union

from ._errors import NotFoundError, SandboxError
from ._transport import CHUNK, Stream
from .models import EntryInfo, FilesystemEvent

if TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = ["Files", "WatchHandle", "ReadStream"]

Data = Union[str, bytes, bytearray, memoryview, io.IOBase, Any]


def _body(path: str, data: Data):
    """The request body for data: bytes for str/bytes, a chunk generator for a
    file object (read CHUNK at a time, never whole; text is sent as UTF-8)."""
    if data is None:
        raise ValueError(f"files.write({path!r}): data is None")
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    read = getattr(data, "read", None)
    if callable(read):
        def chunks() -> Iterator[bytes]:
            while True:
                b = read(CHUNK)
                if not b:
                    return
                yield b.encode("utf-8") if isinstance(b, str) else bytes(b)
        return chunks()
    raise TypeError(f"files.write({path!r}): data must be str, bytes or a file object, not {type(data).__name__}")


class ReadStream:
    """A file being downloaded: iterate for chunks of bytes, or ``read(n)``.
    Close it (or use ``with``) when done early."""

    def __init__(self, stream: Stream):
        self._s = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                b = self._s.read1(CHUNK)
                if not b:
                    return
                yield b
        finally:
            self.close()

    def read(self, n: int = -1) -> bytes:
        return self._s.read(n)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._s.close()

    @property
    def closed(self) -> bool:
        return self._s.closed

    def __enter__(self) -> "ReadStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WatchHandle:
    """A running ``watch_dir``; ``stop()`` ends it. ``error`` holds the exception
    that ended it early (a broken connection, or one raised by the callback)."""

    def __init__(self, stream: Stream, callback: Callable[[FilesystemEvent], Any], path: str):
        self._stream = stream
        self._callback = callback
        self.path = path
        self.error: Optional[BaseException] = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ds-sandbox-watch {path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._stream.events():
                if self._stopped.is_set():
                    break
                self._callback(FilesystemEvent._from_wire(ev))
        except BaseException as e:  # noqa: BLE001 - kept for the owner to see
            if not self._stopped.is_set():
                self.error = e
        finally:
            self._stream.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop watching; no callback runs after this returns (unless called from
        the callback itself)."""
        self._stopped.set()
        self._stream.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(10)


class Files:
    """The sandbox's files. Paths are as the sandbox's code sees them; relative
    ones resolve against the workdir (``sbx.workdir``, default /home/user).

    A missing path raises SandboxFileNotFoundError, which is both a
    ``ds_sandbox.NotFoundError`` and a built-in ``FileNotFoundError``; a path
    outside what the sandbox may touch raises PermissionDeniedError (also a
    ``PermissionError``).
    """

    def __init__(self, sandbox: "Sandbox"):
        self._sbx = sandbox

    def _t(self):
        return self._sbx._t

    def _p(self, *parts: str) -> str:
        return self._sbx._path("files", *parts)

    # -- write ------------------------------------------------------------------

    def write(self, path: Union[str, list], data: Data = None) -> Union[EntryInfo, list[EntryInfo]]:
        """Write a file, creating its parent directories; returns its EntryInfo.

        ``data`` is a str (written as UTF-8), bytes, or a file object opened in
        binary or text mode, which is streamed in chunks. The list form
        ``write([{"path": p, "data": d}, ...])`` writes several and returns their
        EntryInfos.
        """
        if isinstance(path, (list, tuple)):
            if data is not None:
                raise TypeError("files.write(list): pass the data inside each entry")
            out = []
            for entry in path:
                if not isinstance(entry, dict) or "path" not in entry:
                    raise TypeError("files.write(list): each entry must be a dict with 'path' and 'data'")
                out.append(self._write_one(entry["path"], entry.get("data")))
            return out
        return self._write_one(path, data)

    def _write_one(self, path: str, data: Data) -> EntryInfo:
        body = _body(path, data)
        doc = self._t().call("PUT", self._p(), query={"path": path}, body=body,
                             content_type="application/octet-stream", files=True)
        return EntryInfo._from_wire(doc or {"path": path})

    create = write

    def write_files(self, files: dict[str, Data]) -> list[EntryInfo]:
        """Write several files: ``{path: data}``."""
        return [self._write_one(p, d) for p, d in files.items()]

    def upload(self, local_path: Union[str, os.PathLike], remote_path: str) -> EntryInfo:
        """Copy a local file into the sandbox (streamed)."""
        if not os.path.isfile(local_path):
            raise ValueError(f"files.upload: {os.fspath(local_path)!r} is not a file")
        with open(local_path, "rb") as f:
            return self._write_one(remote_path, f)

    # -- read ---------------------------------------------------------------------

    def read(self, path: str, format: str = "text") -> Union[str, bytes, ReadStream]:
        """Read a file: ``format="text"`` (default) returns a str (the file must
        be UTF-8), ``"bytes"`` returns bytes, ``"stream"`` returns a ReadStream
        that yields chunks as they arrive."""
        if format not in ("text", "bytes", "stream"):
            raise ValueError(f"files.read: format {format!r}: want 'text', 'bytes' or 'stream'")
        stream = self._t().open("GET", self._p(), query={"path": path}, files=True,
                                accept="application/octet-stream")
        if format == "stream":
            return ReadStream(stream)
        with stream:
            data = stream.read()
        return data.decode("utf-8") if format == "text" else data

    def download(self, remote_path: str, local_path: Union[str, os.PathLike]) -> str:
        """Copy a sandbox file to a local path (streamed), creating local parent
        directories; returns the local path."""
        local_path = os.fspath(local_path)
        parent = os.path.dirname(os.path.abspath(local_path))
        os.makedirs(parent, exist_ok=True)
        with self.read(remote_path, format="stream") as src, open(local_path, "wb") as dst:
            for chunk in src:
                dst.write(chunk)
        return local_path

    # -- metadata -------------------------------------------------------------------

    def list(self, path: Optional[str] = None, depth: int = 1) -> list[EntryInfo]:
        """The entries of a directory (the workdir by default), ``depth`` levels
        deep."""
        if depth < 1:
            raise ValueError("files.list: depth must be at least 1")
        p = path if path else self._sbx.workdir or "."
        docs = self._t().call("GET", self._p("list"), query={"path": p, "depth": depth}, files=True)
        return [EntryInfo._from_wire(d) for d in docs or []]

    def get_info(self, path: str) -> EntryInfo:
        """The EntryInfo of a path (SandboxFileNotFoundError when missing)."""
        return EntryInfo._from_wire(self._t().call("GET", self._p("stat"), query={"path": path}, files=True) or {})

    def exists(self, path: str) -> bool:
        try:
            self.get_info(path)
        except NotFoundError:
            return False
        return True

    def remove(self, path: str) -> None:
        """Remove a file, or a directory with everything in it."""
        self._t().call("DELETE", self._p(), query={"path": path}, files=True)

    def rename(self, old_path: str, new_path: str) -> EntryInfo:
        """Move a file or directory; returns the EntryInfo at its new path."""
        doc = self._t().call("POST", self._p("rename"), json_body={"from": old_path, "to": new_path}, files=True)
        return EntryInfo._from_wire(doc) if doc else self.get_info(new_path)

    def make_dir(self, path: str) -> EntryInfo:
        """Create a directory and its parents (no error when it exists)."""
        doc = self._t().call("POST", self._p("mkdir"), query={"path": path}, files=True)
        return EntryInfo._from_wire(doc) if doc else self.get_info(path)

    # -- watch -------------------------------------------------------------------------

    def watch_dir(self, path: str, callback: Callable[[FilesystemEvent], Any],
                  recursive: bool = False) -> WatchHandle:
        """Call ``callback(FilesystemEvent)`` for each change under ``path`` (its
        subdirectories too with ``recursive=True``), from a background thread,
        until ``handle.stop()``. The watch is in place when this returns."""
        q: dict[str, Any] = {"path": path}
        if recursive:
            q["recursive"] = "true"
        stream = self._t().open("GET", self._p("watch"), query=q, files=True, timeout=None)
        return WatchHandle(stream, callback, path)
