"""HTTP transport: JSON requests, raw bodies and NDJSON streams over http.client."""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import urllib.parse
from typing import Any, Iterable, Iterator, Mapping

from ._errors import SandboxError, SandboxTimeoutError, UnavailableError, error_from_response

__all__ = ["Transport", "Stream"]

USER_AGENT = "ds-sandbox-python/0.1"
# Socket timeout of ordinary (non-streamed) requests, seconds.
DEFAULT_TIMEOUT = 300.0
# Largest JSON response body and largest single NDJSON line read into memory. A
# line can carry a base64 image or PDF, so it is generous; past it we refuse
# rather than grow without bound.
MAX_JSON_BODY = 256 << 20
MAX_LINE = 256 << 20
# Size of the chunks streamed uploads are sent in and streamed downloads read in.
CHUNK = 256 << 10

_NO_TIMEOUT = object()
# How often a request the server refused for load (429 with Retry-After: its
# sandbox start queue is full) is sent again, and the longest wait between.
MAX_BUSY_RETRIES = 8
MAX_BUSY_WAIT = 30.0


def _json_default(o: Any) -> Any:
    to = getattr(o, "_to_wire", None)
    if to is not None:
        return to()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


class Transport:
    """One ds-sandbox server: its base URL and API key. Safe to share between
    threads: every request uses its own connection."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        u = urllib.parse.urlsplit(base_url.strip())
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"ds-sandbox server URL {base_url!r}: want http://HOST:PORT or https://HOST:PORT")
        self.base_url = base_url.rstrip("/")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port
        self._prefix = u.path.rstrip("/")
        self.api_key = api_key or None
        self.timeout = timeout
        # For the private server only: the sandboxes made through this transport
        # and not yet killed, killed when the server is stopped at exit.
        self.private = False
        self._owned: set[str] = set()
        self._owned_lock = threading.Lock()

    def own(self, sandbox_id: str) -> None:
        if self.private:
            with self._owned_lock:
                self._owned.add(sandbox_id)

    def disown(self, sandbox_id: str) -> None:
        with self._owned_lock:
            self._owned.discard(sandbox_id)

    def owned(self) -> list[str]:
        with self._owned_lock:
            return sorted(self._owned)

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r})"

    # -- low level ---------------------------------------------------------

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        u = self._prefix + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                u += "?" + urllib.parse.urlencode(q, doseq=True, quote_via=urllib.parse.quote)
        return u

    def _send(self, method: str, path: str, *, query=None, json_body: Any = None,
              body: bytes | Iterable[bytes] | None = None, content_type: str | None = None,
              accept: str = "application/json", timeout: Any = _NO_TIMEOUT,
              files: bool = False) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        headers = {"User-Agent": USER_AGENT, "Accept": accept}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        if json_body is not None:
            body = json.dumps(json_body, default=_json_default).encode("utf-8")
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        t = self.timeout if timeout is _NO_TIMEOUT else timeout
        url = self.url(path, query)
        # A body that is bytes can be sent again; a streamed one cannot.
        resendable = body is None or isinstance(body, (bytes, bytearray, memoryview))
        for attempt in range(MAX_BUSY_RETRIES + 1):
            conn, resp = self._send_once(method, url, body, headers, t)
            wait = resp.getheader("Retry-After") if resp.status == 429 else None
            if wait is None or not resendable or attempt == MAX_BUSY_RETRIES or not wait.isdigit():
                break
            # Refused for load: wait as told, longer each time, with jitter.
            resp.read()
            conn.close()
            d = min(int(wait) * (2 ** min(attempt, 5)), MAX_BUSY_WAIT)
            time.sleep(d / 2 + random.uniform(0, d / 2))
        if resp.status >= 300:
            try:
                data = resp.read(1 << 20)
            except Exception:
                data = b""
            conn.close()
            raise error_from_response(resp.status, data, resp.getheader("X-Request-ID"), files=files)
        return conn, resp

    def _send_once(self, method: str, url: str, body, headers: dict, t: Any
                   ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connect(t)
        try:
            if body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
                conn.request(method, url, body=body, headers=headers, encode_chunked=True)
            else:
                conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
        except socket.timeout as e:
            conn.close()
            raise SandboxTimeoutError("timeout", f"{method} {url}: no answer from {self.base_url} within {t}s") from e
        except (ConnectionError, OSError, http.client.HTTPException) as e:
            conn.close()
            if isinstance(e, SandboxError):
                raise
            raise UnavailableError("unavailable", f"{method} {url}: cannot reach the ds-sandbox server at {self.base_url}: {e}") from e
        return conn, resp

    # -- public ------------------------------------------------------------

    def call(self, method: str, path: str, *, query=None, json_body: Any = None,
             body=None, content_type=None, timeout: Any = _NO_TIMEOUT, files: bool = False) -> Any:
        """Send a request and return the decoded JSON answer (None when empty)."""
        conn, resp = self._send(method, path, query=query, json_body=json_body, body=body,
                                content_type=content_type, timeout=timeout, files=files)
        try:
            data = _read_bounded(resp, MAX_JSON_BODY, f"{method} {path}")
        except socket.timeout as e:
            raise SandboxTimeoutError("timeout", f"{method} {path}: the answer stalled") from e
        finally:
            conn.close()
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError as e:
            raise SandboxError("internal", f"{method} {path}: the server sent malformed JSON: {e}") from e

    def open(self, method: str, path: str, *, query=None, json_body: Any = None, body=None,
             content_type=None, timeout: Any = _NO_TIMEOUT, files: bool = False,
             accept: str = "application/x-ndjson") -> "Stream":
        """Send a request and return its answer as a Stream to read as it arrives."""
        conn, resp = self._send(method, path, query=query, json_body=json_body, body=body,
                                content_type=content_type, accept=accept, timeout=timeout, files=files)
        return Stream(conn, resp, f"{method} {path}")


def _read_bounded(resp: http.client.HTTPResponse, limit: int, what: str) -> bytes:
    data = resp.read(limit + 1)
    if len(data) > limit:
        raise SandboxError("limit_exceeded", f"{what}: the answer is larger than {limit} bytes")
    return data


class Stream:
    """A streamed HTTP answer: NDJSON events (``events()``) or raw bytes (``read``).

    ``close()`` may be called from another thread to end a blocked read.
    """

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, what: str):
        self._conn = conn
        self._resp = resp
        self._what = what
        self.closed = False

    @property
    def headers(self):
        return self._resp.headers

    def events(self, max_line: int = MAX_LINE) -> Iterator[dict]:
        """Yield each JSON line as soon as it has arrived in full."""
        while True:
            try:
                line = self._resp.readline(max_line + 1)
            except socket.timeout as e:
                raise SandboxTimeoutError("timeout", f"{self._what}: the stream stalled") from e
            except (http.client.IncompleteRead, ConnectionError, OSError, ValueError) as e:
                if self.closed:
                    return
                raise UnavailableError("unavailable", f"{self._what}: the stream broke: {e}") from e
            if not line:
                return
            if len(line) > max_line:
                raise SandboxError("limit_exceeded", f"{self._what}: a stream line is longer than {max_line} bytes")
            if not line.endswith(b"\n"):
                # The stream ended inside an event: it was cut (a reader that
                # stalled past the server's bound, or a broken connection).
                raise UnavailableError("unavailable", f"{self._what}: the stream was cut inside an event")
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError as e:
                raise SandboxError("internal", f"{self._what}: malformed stream line: {e}") from e
            if isinstance(ev, dict):
                yield ev

    def read(self, n: int = -1) -> bytes:
        try:
            if n is None or n < 0:
                return self._resp.read()
            return self._resp.read(n)
        except socket.timeout as e:
            raise SandboxTimeoutError("timeout", f"{self._what}: the download stalled") from e
        except (http.client.IncompleteRead, ConnectionError) as e:
            raise UnavailableError("unavailable", f"{self._what}: the download broke: {e}") from e

    def read1(self, n: int = CHUNK) -> bytes:
        try:
            return self._resp.read1(n)
        except socket.timeout as e:
            raise SandboxTimeoutError("timeout", f"{self._what}: the download stalled") from e
        except (http.client.IncompleteRead, ConnectionError) as e:
            raise UnavailableError("unavailable", f"{self._what}: the download broke: {e}") from e

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self._conn.close()
        except Exception:
            pass

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
