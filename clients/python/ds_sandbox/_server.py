"""Finding the server: DS_SANDBOX_URL, a configured endpoint, or a private daemon.

With no server URL configured, the first call that needs a server starts ONE
``ds-sandbox serve --listen 127.0.0.1:0 --ephemeral`` for this Python process, reads the
address from its first stdout line, and stops it (SIGTERM, then SIGKILL) when
the interpreter exits. Its log (stderr) goes to a temporary file that is kept
only when the server failed.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Optional

from ._errors import ServerStartError
from ._transport import Transport

ENV_URL = "DS_SANDBOX_URL"
ENV_KEY = "DS_SANDBOX_API_KEY"
ENV_BIN = "DS_SANDBOX_BIN"
# Seconds to wait for the daemon's "listening" line.
ENV_START_TIMEOUT = "DS_SANDBOX_START_TIMEOUT"
DEFAULT_START_TIMEOUT = 60.0
# Seconds between SIGTERM and SIGKILL at exit.
STOP_GRACE = 25.0
# Seconds spent at most killing this process's sandboxes before stopping the server.
KILL_AT_EXIT_BUDGET = 30.0

_LISTEN_RE = re.compile(r"^ds-sandbox: listening on (https?://\S+)\s*$")

_lock = threading.Lock()
_server: Optional["_PrivateServer"] = None
_transports: dict[tuple[str, Optional[str]], Transport] = {}


def transport_for(endpoint: str | None = None, api_key: str | None = None) -> Transport:
    """The transport for an explicit endpoint, else DS_SANDBOX_URL, else the private server."""
    key = api_key if api_key is not None else os.environ.get(ENV_KEY) or None
    url = endpoint or os.environ.get(ENV_URL) or ""
    private = not url
    if private:
        url = _private_server_url()
    with _lock:
        t = _transports.get((url, key))
        if t is None:
            t = _transports[(url, key)] = Transport(url, key)
            t.private = private
        return t


def _private_server_url() -> str:
    global _server
    with _lock:
        if _server is not None and _server.alive():
            return _server.url
        if _server is not None:
            # It died under us: say so rather than silently starting a new one
            # whose sandboxes differ; the next call may start afresh.
            dead, _server = _server, None
            dead.stop()
            raise ServerStartError("unavailable",
                                   f"the private ds-sandbox server ({dead.url}) exited with status {dead.proc.returncode}"
                                   f"{dead.log_tail()}; its sandboxes are gone")
        _server = _PrivateServer.start()
        return _server.url


def private_server_url() -> str | None:
    """The URL of this process's private server, or None when none runs."""
    with _lock:
        return _server.url if _server is not None and _server.alive() else None


def shutdown_private_server() -> None:
    """Stop the private server now (it is also stopped at exit), killing the
    sandboxes this process made on it and did not kill: a stopped daemon leaves
    its sandboxes running for the next one to re-attach, which is right for a
    long-lived ``ds-sandbox serve`` but would leak a private server's."""
    global _server
    with _lock:
        s, _server = _server, None
        transports = [t for t in _transports.values() if t.private]
        for k in [k for k, t in _transports.items() if t.private]:
            del _transports[k]
    if s is None:
        return
    deadline = time.monotonic() + KILL_AT_EXIT_BUDGET
    if s.alive():
        for t in transports:
            for sid in t.owned():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    t.call("DELETE", "/v1/sandboxes/" + urllib.parse.quote(sid, safe=""), timeout=min(10.0, left))
                except Exception:
                    pass
                t.disown(sid)
    s.stop()


atexit.register(shutdown_private_server)


def find_binary() -> str:
    b = os.environ.get(ENV_BIN)
    if b:
        if not os.path.isfile(b) or not os.access(b, os.X_OK):
            raise ServerStartError("unavailable", f"{ENV_BIN}={b!r} is not an executable file")
        return b
    found = shutil.which("ds-sandbox")
    if found:
        return found
    raise ServerStartError(
        "unavailable",
        "no ds-sandbox server: DS_SANDBOX_URL is not set and no `ds-sandbox` binary was found on PATH "
        f"to start one (install ds-sandbox, set {ENV_BIN} to its path, or set {ENV_URL} to a running server)")


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: stop with us even after SIGKILL
    except Exception:
        pass


class _PrivateServer:
    def __init__(self, proc: subprocess.Popen, log_path: str):
        self.proc = proc
        self.log_path = log_path
        self.url = ""
        self._ready = threading.Event()
        self._error = ""

    @classmethod
    def start(cls) -> "_PrivateServer":
        # --ephemeral: no persisted records, the sandboxes die with the daemon.
        # A binary older than that flag is started without it.
        try:
            return cls._start(["serve", "--listen", "127.0.0.1:0", "--ephemeral"])
        except ServerStartError as e:
            if "flag provided but not defined: -ephemeral" not in e.message:
                raise
        return cls._start(["serve", "--listen", "127.0.0.1:0"])

    @classmethod
    def _start(cls, args: list[str]) -> "_PrivateServer":
        binary = find_binary()
        try:
            timeout = float(os.environ.get(ENV_START_TIMEOUT) or DEFAULT_START_TIMEOUT)
        except ValueError:
            timeout = DEFAULT_START_TIMEOUT
        fd, log_path = tempfile.mkstemp(prefix="ds-sandbox-serve-", suffix=".log")
        box: dict = {}
        started = threading.Event()

        # The keeper thread starts the daemon, reads its first line, then drains its
        # stdout and waits for it. Starting it from this long-lived thread matters:
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits.
        def keeper() -> None:
            try:
                proc = subprocess.Popen(
                    [binary, *args],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fd,
                    preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
                    close_fds=True)
            except OSError as e:
                box["error"] = f"cannot run {binary}: {e}"
                started.set()
                return
            srv = box["server"] = cls(proc, log_path)
            started.set()
            first = proc.stdout.readline().decode("utf-8", "replace")
            m = _LISTEN_RE.match(first)
            if m:
                srv.url = m.group(1)
            else:
                srv._error = f"its first line was {first.strip()!r}, not 'ds-sandbox: listening on URL'" if first else "it printed nothing"
            srv._ready.set()
            while proc.stdout.read(1 << 16):
                pass
            proc.wait()

        t = threading.Thread(target=keeper, name="ds-sandbox-serve", daemon=True)
        t.start()
        started.wait()
        os.close(fd)
        if "error" in box:
            raise ServerStartError("unavailable", box["error"])
        srv: _PrivateServer = box["server"]
        if not srv._ready.wait(timeout):
            srv.stop(keep_log=True)
            raise ServerStartError("unavailable", f"{binary} serve did not say where it listens within {timeout:g}s{srv.log_tail()}")
        if not srv.url:
            srv.stop(keep_log=True)
            raise ServerStartError("unavailable", f"{binary} serve failed to start: {srv._error}{srv.log_tail()}")
        return srv

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - n))
                tail = f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        return f"\n--- server log ({self.log_path}) ---\n{tail}" if tail else ""

    def stop(self, keep_log: bool = False) -> None:
        p = self.proc
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            except OSError:
                pass
        failed = keep_log or (p.returncode not in (0, -signal.SIGTERM, None))
        if not failed:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
