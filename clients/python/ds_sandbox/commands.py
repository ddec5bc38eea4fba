"""sbx.commands: shell commands inside the sandbox."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

from ._errors import NotFoundError, UnavailableError
from ._transport import Stream
from .models import CommandResult, ProcessInfo

if TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = ["Commands", "CommandHandle"]

_DEFAULT = object()
DEFAULT_TIMEOUT = 60.0
STREAM_GRACE = 60.0


def _collect(stream: Stream, what: str, on_stdout: Optional[Callable[[str], Any]],
             on_stderr: Optional[Callable[[str], Any]], on_start: Optional[Callable[[int], Any]] = None) -> CommandResult:
    out: list[str] = []
    err: list[str] = []
    with stream:
        for ev in stream.events():
            typ = ev.get("type")
            if typ == "start":
                if on_start:
                    on_start(int(ev.get("pid") or 0))
            elif typ == "stdout":
                d = ev.get("data", "")
                out.append(d)
                if on_stdout:
                    on_stdout(d)
            elif typ == "stderr":
                d = ev.get("data", "")
                err.append(d)
                if on_stderr:
                    on_stderr(d)
            elif typ == "end":
                return CommandResult(int(ev.get("exit_code", -1)), "".join(out), "".join(err), ev.get("error") or None)
    raise UnavailableError("unavailable", f"{what}: the output stream ended before the command did "
                                          "(the sandbox died or the connection broke)")


class CommandHandle:
    """A command running in the background: ``wait()`` for its CommandResult,
    ``kill()``, ``send_stdin()``. Output is kept by the server (up to a bound)
    from the start, so ``wait()`` returns all of it."""

    def __init__(self, commands: "Commands", pid: int, on_stdout=None, on_stderr=None):
        self._c = commands
        self.pid = pid
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._result: Optional[CommandResult] = None
        self._error: Optional[BaseException] = None
        if on_stdout or on_stderr:
            self._start_reader()

    def __repr__(self) -> str:
        return f"CommandHandle(pid={self.pid})"

    def _start_reader(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._read, name=f"ds-sandbox-process {self.pid}", daemon=True)
            self._thread.start()

    def _read(self) -> None:
        try:
            stream = self._c._t().open("GET", self._c._p(str(self.pid), "stream"), timeout=None)
            self._result = _collect(stream, f"process {self.pid}", self._on_stdout, self._on_stderr)
        except BaseException as e:  # noqa: BLE001 - re-raised by wait()
            self._error = e

    def wait(self, timeout: Optional[float] = None) -> CommandResult:
        """Wait for the command to end and return its result (a non-zero exit code
        is a result, not an exception). ``timeout`` bounds the wait (seconds);
        TimeoutError when it passes (the command keeps running)."""
        self._start_reader()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"process {self.pid} still runs after {timeout}s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def kill(self) -> bool:
        """SIGKILL the command (its process group); False when it already ended."""
        return self._c.kill(self.pid)

    def send_stdin(self, data: Union[str, bytes]) -> None:
        """Write to the command's stdin (it must have been started with stdin=True)."""
        self._c.send_stdin(self.pid, data)

    def close_stdin(self) -> None:
        self._c.close_stdin(self.pid)


class Commands:
    """Shell commands run inside the sandbox (``/bin/bash -c``), as its user, in
    its workdir, with its envs."""

    def __init__(self, sandbox: "Sandbox"):
        self._sbx = sandbox

    def _t(self):
        return self._sbx._t

    def _p(self, *parts: str) -> str:
        return self._sbx._path("processes", *parts)

    def run(self, cmd: str, timeout: Optional[float] = _DEFAULT, envs: Optional[Mapping[str, str]] = None,  # type: ignore[assignment]
            cwd: Optional[str] = None, user: Optional[str] = None, background: bool = False,
            on_stdout: Optional[Callable[[str], Any]] = None, on_stderr: Optional[Callable[[str], Any]] = None,
            stdin: bool = False, tag: Optional[str] = None) -> Union[CommandResult, CommandHandle]:
        """Run a shell command.

        In the foreground (default) wait for it and return a CommandResult
        (exit_code, stdout, stderr, error). A non-zero exit code is NOT an
        exception; check ``result.exit_code``. ``timeout`` (seconds, default 60;
        None or 0 for none) kills it when it runs longer: the result then has
        exit_code -1 and ``error`` says why. ``on_stdout``/``on_stderr`` get each
        output chunk as it arrives.

        With ``background=True`` return a CommandHandle at once; the timeout then
        applies only when given. ``stdin=True`` keeps its stdin open for
        ``send_stdin`` (otherwise it reads end-of-file).
        """
        if not isinstance(cmd, str) or not cmd:
            raise ValueError("commands.run: cmd must be a non-empty str")
        if timeout is _DEFAULT:
            timeout = None if background else DEFAULT_TIMEOUT
        req: dict[str, Any] = {"cmd": cmd}
        if envs:
            req["envs"] = {str(k): str(v) for k, v in envs.items()}
        if cwd:
            req["cwd"] = cwd
        if user:
            req["user"] = user
        if timeout:
            req["timeout_ms"] = max(1, int(round(float(timeout) * 1000)))
        if stdin:
            req["stdin"] = True
        if tag:
            req["tag"] = tag
        if background:
            req["background"] = True
            doc = self._t().call("POST", self._p(), json_body=req)
            info = ProcessInfo._from_wire(doc or {})
            return CommandHandle(self, info.pid, on_stdout, on_stderr)
        stream = self._t().open("POST", self._p(), json_body=req,
                                timeout=(float(timeout) + STREAM_GRACE) if timeout else None)
        return _collect(stream, f"command {cmd!r}", on_stdout, on_stderr)

    def list(self) -> list[ProcessInfo]:
        """The running commands started through the API."""
        return [ProcessInfo._from_wire(d) for d in self._t().call("GET", self._p()) or []]

    def connect(self, pid: int, on_stdout: Optional[Callable[[str], Any]] = None,
                on_stderr: Optional[Callable[[str], Any]] = None) -> CommandHandle:
        """A handle on a running command, to wait for it or kill it."""
        return CommandHandle(self, int(pid), on_stdout, on_stderr)

    def kill(self, pid: int) -> bool:
        """SIGKILL a command (its process group); False when there is no such
        running command."""
        try:
            self._t().call("POST", self._p(str(int(pid)), "signal"), json_body={"signal": "SIGKILL"})
        except NotFoundError:
            return False
        return True

    def send_signal(self, pid: int, signal: str) -> None:
        """Send "SIGTERM", "SIGINT", "SIGKILL", … to a command."""
        self._t().call("POST", self._p(str(int(pid)), "signal"), json_body={"signal": signal})

    def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        """Write to a command's stdin (started with stdin=True)."""
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode("utf-8")
        self._t().call("POST", self._p(str(int(pid)), "stdin"), json_body={"data": data})

    def close_stdin(self, pid: int) -> None:
        self._t().call("POST", self._p(str(int(pid)), "stdin"), json_body={"data": "", "close": True})
