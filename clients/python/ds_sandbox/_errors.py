"""Exceptions raised by the ds-sandbox client.

Every error the server reports arrives as ``{code, message, request_id}`` and is
raised as a :class:`SandboxError` subclass chosen by ``code``. Some subclasses also
derive from the built-in exception a Python user would reach for first, so
``except FileNotFoundError`` or ``except ValueError`` keep working.

A Python exception raised by *your code* inside the sandbox is not an error of the
client: it comes back in ``Execution.error``. Likewise a command that exits
non-zero is a :class:`~ds_sandbox.CommandResult`, not an exception.
"""

from __future__ import annotations

import json
from typing import Any


class SandboxError(Exception):
    """An error reported by the ds-sandbox server (or by the client about it).

    Attributes: ``code`` (a stable string such as ``"not_found"``), ``message``
    (the server's explanation), ``request_id`` (quote it when reporting a bug)
    and ``status`` (the HTTP status, or None when no response came).
    """

    default_code = "internal"

    def __init__(self, code: str | None = None, message: str = "",
                 request_id: str | None = None, status: int | None = None):
        self.code = code or self.default_code
        self.message = message
        self.request_id = request_id or None
        self.status = status
        Exception.__init__(self, self.code, message)

    # The OSError-derived subclasses would otherwise format like "[Errno ...]".
    def __str__(self) -> str:
        s = f"[{self.code}] {self.message}"
        if self.request_id:
            s += f" (request {self.request_id})"
        return s

    def __reduce__(self):
        return (type(self), (self.code, self.message, self.request_id, self.status))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, request_id={self.request_id!r})"


class NotFoundError(SandboxError):
    """The sandbox, context, process, file, template, workspace or dataset does not exist."""
    default_code = "not_found"


class SandboxFileNotFoundError(NotFoundError, FileNotFoundError):
    """A file API call named a path that does not exist (also a FileNotFoundError)."""


class InvalidArgumentError(SandboxError, ValueError):
    """The request was malformed or named something impossible (also a ValueError)."""
    default_code = "invalid_argument"


class AlreadyExistsError(SandboxError):
    """The thing to be created already exists."""
    default_code = "already_exists"


class UnsupportedError(SandboxError):
    """The backend cannot honour the request (e.g. a network policy on the local backend).

    ds-sandbox refuses settings it cannot enforce instead of ignoring them.
    """
    default_code = "unsupported"


class LimitExceededError(SandboxError):
    """A size, count or rate limit was hit."""
    default_code = "limit_exceeded"


class TooLargeError(LimitExceededError):
    """A request body or upload is larger than the server accepts (HTTP 413)."""
    default_code = "too_large"


class InsufficientStorageError(LimitExceededError):
    """The disk, or the workspace's disk quota, is full (HTTP 507)."""
    default_code = "insufficient_storage"


class PermissionDeniedError(SandboxError, PermissionError):
    """The caller may not do this: a bad API key, a path outside the sandbox (also a PermissionError)."""
    default_code = "permission_denied"


class UnavailableError(SandboxError):
    """The sandbox or the server is not (or no longer) running or reachable."""
    default_code = "unavailable"


class ServerStartError(UnavailableError):
    """The client could not start its private ``ds-sandbox serve``."""


class SandboxTimeoutError(SandboxError, TimeoutError):
    """An operation of ds-sandbox (not your code) ran past its deadline (also a TimeoutError)."""
    default_code = "timeout"


class InternalError(SandboxError):
    """The server failed; the message and request id say what and where."""
    default_code = "internal"


_BY_CODE: dict[str, type[SandboxError]] = {
    "not_found": NotFoundError,
    "invalid_argument": InvalidArgumentError,
    "already_exists": AlreadyExistsError,
    "unsupported": UnsupportedError,
    "limit_exceeded": LimitExceededError,
    "too_large": TooLargeError,
    "insufficient_storage": InsufficientStorageError,
    "permission_denied": PermissionDeniedError,
    "unauthenticated": PermissionDeniedError,
    "unavailable": UnavailableError,
    "timeout": SandboxTimeoutError,
    "internal": InternalError,
}

_BY_STATUS: dict[int, str] = {
    400: "invalid_argument", 401: "permission_denied", 403: "permission_denied",
    404: "not_found", 408: "timeout", 409: "already_exists", 413: "too_large",
    422: "unsupported", 429: "limit_exceeded", 501: "unsupported", 503: "unavailable",
    504: "timeout", 507: "insufficient_storage",
}


def error_from_response(status: int, body: bytes, request_id: str | None = None,
                        files: bool = False) -> SandboxError:
    """Build the exception for a non-2xx response."""
    code = message = None
    try:
        doc: Any = json.loads(body.decode("utf-8"))
        if isinstance(doc, dict):
            code = doc.get("code") or None
            message = doc.get("message")
            request_id = doc.get("request_id") or request_id
    except (ValueError, UnicodeDecodeError):
        pass
    if not code:
        code = _BY_STATUS.get(status, "internal")
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {text[:500]}" if text else "")
    cls = _BY_CODE.get(code, SandboxError)
    if files and cls is NotFoundError:
        cls = SandboxFileNotFoundError
    return cls(code, message, request_id, status)
