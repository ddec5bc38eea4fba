"""The objects the client returns: executions and their results, file entries,
sandbox descriptions, command results. They mirror the server's wire types
(api/*.go in the ds-sandbox repository) field for field."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

__all__ = [
    "Execution", "Logs", "Result", "ExecutionError", "Finding", "EntryInfo", "SandboxInfo",
    "NetworkPolicy", "CommandResult", "ProcessInfo", "FilesystemEvent", "Context", "Dataset",
]

_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})?$")


def parse_time(s: Any) -> Optional[datetime]:
    """Parse an RFC 3339 time (Go's time.Time JSON, nanoseconds allowed). None for
    a missing or zero time."""
    if not s or not isinstance(s, str):
        return None
    m = _TIME_RE.match(s.strip())
    if not m:
        return None
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    if y == "0001":  # Go's zero time
        return None
    us = int((frac or "0")[:6].ljust(6, "0"))
    tzinfo = timezone.utc
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    return datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), us, tzinfo=tzinfo)


# -- code execution -------------------------------------------------------------


@dataclass
class ExecutionError:
    """A Python exception raised by the cell, or the timeout or kernel death that
    ended it. ``name`` is the exception class ("ZeroDivisionError"); two names are
    ds-sandbox's own: "TimeoutError" (the cell ran past its timeout and was
    interrupted; the sandbox and its state live on) and "DeadKernelError"."""

    name: str
    value: str
    traceback: str

    @classmethod
    def _from_wire(cls, d: dict | None) -> Optional["ExecutionError"]:
        if not d:
            return None
        return cls(d.get("name", ""), d.get("value", ""), d.get("traceback", ""))

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "value": self.value, "traceback": self.traceback})


@dataclass
class Finding:
    """One thing the server's code scanner saw in a cell (the seed's CodeIssue):
    ``type`` is the category (file_write, network, subprocess, dynamic_exec,
    system), ``severity`` medium, high or critical, ``line`` 1-based, and
    ``function`` or ``module`` what it is about. The scanner is a tripwire for
    obvious dangerous code, not a security boundary."""

    type: str
    severity: str
    line: int
    message: str = ""
    function: Optional[str] = None
    module: Optional[str] = None

    @classmethod
    def _from_wire(cls, d: dict) -> "Finding":
        return cls(d.get("type", ""), d.get("severity", ""), int(d.get("line") or 0), d.get("message", ""),
                   d.get("function") or None, d.get("module") or None)


class Logs:
    """What a cell printed: ``stdout`` and ``stderr`` as lists of the chunks the
    kernel sent, in order."""

    __slots__ = ("stdout", "stderr")

    def __init__(self, stdout: list[str] | None = None, stderr: list[str] | None = None):
        self.stdout: list[str] = list(stdout or [])
        self.stderr: list[str] = list(stderr or [])

    def __repr__(self) -> str:
        return f"Logs(stdout: {self.stdout!r}, stderr: {self.stderr!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Logs) and (self.stdout, self.stderr) == (other.stdout, other.stderr)

    def to_json(self) -> str:
        return json.dumps({"stdout": self.stdout, "stderr": self.stderr})


_FORMATS = ("text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript")


class Result:
    """One rich output of a cell, with every representation the kernel sent.

    ``text`` (text/plain), ``html``, ``markdown``, ``svg``, ``latex``,
    ``javascript`` are strings; ``png``, ``jpeg``, ``pdf`` are base64 strings
    (``png_bytes()`` etc. decode them); ``json`` is the decoded JSON value;
    ``extra`` maps every other MIME type to its value. ``is_main_result`` is True
    for the value of the cell's last expression, False for display() output.
    Results also display themselves in Jupyter (``_repr_png_`` …) and can be
    indexed like the seed's dicts: ``result["png"]``.
    """

    def __init__(self, text: str | None = None, html: str | None = None, markdown: str | None = None,
                 svg: str | None = None, png: str | None = None, jpeg: str | None = None,
                 pdf: str | None = None, latex: str | None = None, json: Any = None,
                 javascript: str | None = None, extra: dict | None = None,
                 is_main_result: bool = False, display_id: str | None = None):
        self.text = text
        self.html = html
        self.markdown = markdown
        self.svg = svg
        self.png = png
        self.jpeg = jpeg
        self.pdf = pdf
        self.latex = latex
        self.json = json
        self.javascript = javascript
        self.extra = dict(extra or {})
        self.is_main_result = is_main_result
        self.display_id = display_id

    @classmethod
    def _from_wire(cls, d: dict) -> "Result":
        return cls(
            text=d.get("text") or None, html=d.get("html") or None, markdown=d.get("markdown") or None,
            svg=d.get("svg") or None, png=d.get("png") or None, jpeg=d.get("jpeg") or None,
            pdf=d.get("pdf") or None, latex=d.get("latex") or None, json=d.get("json"),
            javascript=d.get("javascript") or None, extra=d.get("other") or {},
            is_main_result=bool(d.get("is_main_result")), display_id=d.get("display_id") or None)

    def formats(self) -> list[str]:
        """The representations this result carries: "text", "html", "png", … then
        the MIME types of ``extra``, sorted."""
        f = [n for n in _FORMATS if getattr(self, n) is not None]
        return f + sorted(self.extra)

    def __getitem__(self, key: str) -> Any:
        if key in _FORMATS:
            v = getattr(self, key)
            if v is not None:
                return v
        elif key in self.extra:
            return self.extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def png_bytes(self) -> bytes | None:
        return base64.b64decode(self.png) if self.png else None

    def jpeg_bytes(self) -> bytes | None:
        return base64.b64decode(self.jpeg) if self.jpeg else None

    def pdf_bytes(self) -> bytes | None:
        return base64.b64decode(self.pdf) if self.pdf else None

    def __str__(self) -> str:
        return self.text if self.text is not None else repr(self)

    def __repr__(self) -> str:
        if self.text is not None:
            return f"Result({self.text})"
        return f"Result(Formats: {self.formats()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and self.__dict__ == other.__dict__

    # IPython rich display
    def _repr_html_(self): return self.html
    def _repr_markdown_(self): return self.markdown
    def _repr_svg_(self): return self.svg
    def _repr_png_(self): return self.png
    def _repr_jpeg_(self): return self.jpeg
    def _repr_pdf_(self): return self.pdf
    def _repr_latex_(self): return self.latex
    def _repr_json_(self): return self.json
    def _repr_javascript_(self): return self.javascript


@dataclass
class NetworkDenial:
    """A connection, packet or name lookup the sandbox's network policy
    refused: ``host`` (the name asked for, "" for an IP), ``ip``, ``reason``
    and ``time`` (RFC 3339); for a packet the rules refused (rather than the
    egress proxy or the DNS server) also ``protocol`` ("tcp", "udp",
    "icmp") and ``port``."""
    reason: str = ""
    host: str = ""
    ip: str = ""
    time: str = ""
    protocol: str = ""
    port: int = 0

    @classmethod
    def _from_wire(cls, d: dict) -> "NetworkDenial":
        return cls(reason=d.get("reason", ""), host=d.get("host", ""), ip=d.get("ip", ""), time=d.get("time", ""),
                   protocol=d.get("protocol", ""), port=int(d.get("port") or 0))


class Execution:
    """The outcome of ``run_code``: ``results``, ``logs``, ``error``,
    ``execution_count``, ``notices`` (messages from ds-sandbox, e.g. that the
    context was restarted), ``network_denials`` (what the network policy
    refused while the cell ran), ``findings`` (what the code scanner saw, a
    list of Finding), ``truncated`` (True when output was dropped: past the
    sandbox's ``max_output_bytes``; a notice says how much) and ``oom_killed``
    (True when the sandbox's memory limit killed the kernel; ``error`` is then
    a DeadKernelError saying so). An exception
    raised by the code is reported in ``error``; it is not raised in the
    caller. A cell the scanner refused (scanner mode "block") did not run: its
    error is named "SecurityScanFailedError"."""

    def __init__(self, results: list[Result] | None = None, logs: Logs | None = None,
                 error: ExecutionError | None = None, execution_count: int | None = None,
                 notices: list[str] | None = None, network_denials: list[NetworkDenial] | None = None,
                 findings: list[Finding] | None = None,
                 truncated: bool = False, oom_killed: bool = False):
        self.results: list[Result] = list(results or [])
        self.logs: Logs = logs or Logs()
        self.error: Optional[ExecutionError] = error
        self.execution_count: Optional[int] = execution_count
        self.notices: list[str] = list(notices or [])
        self.network_denials: list[NetworkDenial] = list(network_denials or [])
        self.findings: list[Finding] = list(findings or [])
        self.truncated: bool = truncated
        self.oom_killed: bool = oom_killed

    @property
    def text(self) -> Optional[str]:
        """The text/plain form of the main result (the value of the cell's last
        expression), or None when there is none."""
        for r in self.results:
            if r.is_main_result:
                return r.text
        return None

    @classmethod
    def _from_wire(cls, d: dict) -> "Execution":
        logs = d.get("logs") or {}
        return cls(
            results=[Result._from_wire(r) for r in d.get("results") or []],
            logs=Logs(logs.get("stdout"), logs.get("stderr")),
            error=ExecutionError._from_wire(d.get("error")),
            execution_count=d.get("execution_count") or None,
            notices=d.get("notices") or [],
            network_denials=[NetworkDenial._from_wire(x) for x in d.get("network_denials") or []],
            findings=[Finding._from_wire(f) for f in d.get("findings") or []],
            truncated=bool(d.get("truncated")),
            oom_killed=bool(d.get("oom_killed")))

    def __repr__(self) -> str:
        return (f"Execution(Results: {self.results!r}, Logs: {self.logs!r}, Error: {self.error!r}"
                f", Execution count: {self.execution_count!r})")


# -- sandboxes ------------------------------------------------------------------


@dataclass
class NetworkPolicy:
    """A network policy: "allow", "deny" or "whitelist" (with its destinations)."""

    policy: str = "allow"
    whitelist: list[str] = field(default_factory=list)

    @classmethod
    def _from_wire(cls, d: dict | None) -> "NetworkPolicy":
        d = d or {}
        return cls(d.get("policy") or "", list(d.get("whitelist") or []))


@dataclass
class SandboxInfo:
    """A sandbox as the server describes it. ``end_at`` is the deadline at which
    the server kills it (``set_timeout`` moves it)."""

    sandbox_id: str
    template_id: Optional[str] = None
    backend: str = ""
    state: str = ""
    user: str = ""
    workdir: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    workspace_id: str = ""
    anonymous_workspace: bool = False
    workspace_path: str = ""
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    started_at: Optional[datetime] = None
    end_at: Optional[datetime] = None
    owner: Optional[str] = None
    scanner_mode: str = ""
    #: what runs the sandbox's code contexts: "ipykernel" or "lean"
    engine: str = ""
    #: the resource limits in force (memory_mb, cpu_count, pids_limit,
    #: max_open_files, max_output_bytes, disk_quota_mb; absent = none)
    limits: dict[str, int] = field(default_factory=dict)
    #: what this sandbox lacks on this host (the local backend without a
    #: private mount namespace: code finds its workspace at workspace_path,
    #: not at workdir)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The seed's ``name``: the workspace id."""
        return self.workspace_id

    @classmethod
    def _from_wire(cls, d: dict) -> "SandboxInfo":
        return cls(
            sandbox_id=d.get("sandbox_id", ""), template_id=d.get("template_id") or None,
            backend=d.get("backend", ""), state=d.get("state", ""), user=d.get("user", ""),
            workdir=d.get("workdir", ""), metadata=dict(d.get("metadata") or {}),
            workspace_id=d.get("workspace_id", ""), anonymous_workspace=bool(d.get("anonymous_workspace")),
            workspace_path=d.get("workspace_path", ""), network=NetworkPolicy._from_wire(d.get("network")),
            started_at=parse_time(d.get("started_at")), end_at=parse_time(d.get("end_at")),
            owner=d.get("owner") or None, scanner_mode=d.get("scanner_mode", ""),
            engine=d.get("engine", ""), limits=dict(d.get("limits") or {}), warnings=list(d.get("warnings") or []))


@dataclass
class Context:
    """A code context: one Jupyter kernel with its own state. Pass it to
    ``run_code(context=...)``."""

    id: str
    language: str = "python"
    cwd: str = ""

    @classmethod
    def _from_wire(cls, d: dict) -> "Context":
        return cls(d.get("id", ""), d.get("language", "") or "python", d.get("cwd", ""))


@dataclass
class Dataset:
    """An entry of the server's dataset registry."""

    name: str
    format: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    sha256: str = ""
    size: int = 0
    is_dir: bool = False
    registered_at: Optional[datetime] = None

    @classmethod
    def _from_wire(cls, d: dict) -> "Dataset":
        return cls(d.get("name", ""), d.get("format", ""), d.get("description", "") or "",
                   list(d.get("tags") or []), d.get("sha256", ""), int(d.get("size") or 0),
                   bool(d.get("is_dir")), parse_time(d.get("registered_at")))


# -- files --------------------------------------------------------------------------


@dataclass
class EntryInfo:
    """A file or directory inside the sandbox. ``path`` is absolute, as the
    sandbox's code sees it; ``type`` is "file", "dir", "symlink" or "other"."""

    name: str
    path: str
    type: str
    size: int = 0
    mode: int = field(default=0, repr=False)
    permissions: str = ""
    modified_time: Optional[datetime] = None
    symlink_target: Optional[str] = None

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @classmethod
    def _from_wire(cls, d: dict) -> "EntryInfo":
        return cls(d.get("name", ""), d.get("path", ""), d.get("type", ""), int(d.get("size") or 0),
                   int(d.get("mode") or 0), d.get("permissions", "") or "",
                   parse_time(d.get("modified_time")), d.get("symlink_target") or None)


@dataclass
class FilesystemEvent:
    """One change seen by ``files.watch_dir``: ``name`` is relative to the watched
    directory, ``path`` absolute; ``op`` is create, write, remove, rename or chmod."""

    name: str
    path: str
    op: str

    @property
    def type(self) -> str:
        """The operation (E2B's name for ``op``)."""
        return self.op

    @classmethod
    def _from_wire(cls, d: dict) -> "FilesystemEvent":
        return cls(d.get("name", ""), d.get("path", ""), d.get("op", ""))


# -- commands ------------------------------------------------------------------------


@dataclass
class CommandResult:
    """A command that ran to its end. A non-zero ``exit_code`` is a result, not an
    exception. ``error`` explains an end that was not a normal exit ("timed out
    after 2s", "killed by signal 9"); ``exit_code`` is then -1."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    error: Optional[str] = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not self.error


@dataclass
class ProcessInfo:
    """A process started through ``commands.run``."""

    pid: int
    cmd: str = ""
    tag: Optional[str] = None
    cwd: str = ""
    envs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def _from_wire(cls, d: dict) -> "ProcessInfo":
        return cls(int(d.get("pid") or 0), d.get("cmd", ""), d.get("tag") or None, d.get("cwd", ""),
                   dict(d.get("envs") or {}))
