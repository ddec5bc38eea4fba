"""Sandbox: create, connect, run code, kill."""

from __future__ import annotations

import math
import os
import threading
import urllib.parse
from typing import IO, Any, Callable, Iterable, Mapping, Optional, Union

from ._errors import InvalidArgumentError, NotFoundError, SandboxError, UnavailableError, UnsupportedError
from ._server import transport_for
from ._transport import CHUNK, Transport
from .commands import Commands
from .config import SandboxConfig
from .files import Files
from .models import Context, Dataset, Execution, ExecutionError, Finding, NetworkDenial, Result, SandboxInfo
from .template import Template

__all__ = ["Sandbox", "list_datasets", "register_dataset", "remove_dataset"]

# Seconds a streamed execution may stay silent beyond its own timeout before the
# client gives up on the connection (the server interrupts the cell itself).
STREAM_GRACE = 60.0


def _seg(s: Any) -> str:
    s = str(s)
    if not s:
        raise InvalidArgumentError("invalid_argument", "empty id")
    return urllib.parse.quote(s, safe="")


def _str_map(name: str, m: Optional[Mapping[str, Any]]) -> Optional[dict[str, str]]:
    if m is None:
        return None
    if not isinstance(m, Mapping):
        raise TypeError(f"{name} must be a dict of strings, not {type(m).__name__}")
    return {str(k): str(v) for k, v in m.items()}


def _network_policy(allow_internet: Optional[bool], policy: Optional[str],
                   whitelist: Optional[Iterable[str]]) -> Optional[dict[str, Any]]:
    """The wire network policy for the seed's three arguments, or None when none
    was given. ``allow_internet=False`` means "deny" whatever ``policy`` says; a
    whitelist alone means the "whitelist" policy; a whitelist under "allow" or
    "deny" has no effect (as in the seed) and is not sent."""
    if allow_internet is None and policy is None and whitelist is None:
        return None
    wl = [str(w) for w in whitelist] if whitelist is not None else []
    if isinstance(whitelist, str):
        wl = [w.strip() for w in whitelist.split(",") if w.strip()]
    if allow_internet is False:
        p = "deny"
    elif policy is not None:
        p = policy
    elif wl:
        p = "whitelist"
    else:
        p = "allow"
    if p not in ("allow", "deny", "whitelist"):
        raise InvalidArgumentError("invalid_argument", f"network policy {p!r}: want allow, deny or whitelist")
    net: dict[str, Any] = {"policy": p}
    if p == "whitelist":  # entries mean nothing under allow or deny: not sent
        net["whitelist"] = wl
    return net


class Sandbox:
    """A sandbox on a ds-sandbox server: a Python (Jupyter) kernel with state, a
    workspace of files, and commands.

    Make one with ``Sandbox.create()`` (or ``Sandbox.connect(id)``); ``with
    Sandbox.create() as sbx:`` kills it when the block ends. The server also kills
    it when its timeout passes (``set_timeout`` moves the deadline).
    """

    def __init__(self, transport: Transport, info: SandboxInfo, config: Optional[SandboxConfig] = None):
        self._t = transport
        self._info = info
        self._config = config
        self.sandbox_id: str = info.sandbox_id
        self.files = Files(self)
        self.commands = Commands(self)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Sandbox(sandbox_id={self.sandbox_id!r}, user={self.user!r}, workdir={self.workdir!r})"

    @property
    def id(self) -> str:
        return self.sandbox_id

    @property
    def user(self) -> str:
        """The user the sandbox's code runs as (default "user")."""
        return self._info.user

    @property
    def workdir(self) -> str:
        """The sandbox's working directory (default "/home/user"); relative file
        paths resolve against it."""
        return self._info.workdir

    @property
    def workspace_id(self) -> str:
        return self._info.workspace_id

    @property
    def template_id(self) -> Optional[str]:
        return self._info.template_id

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._info.metadata)

    @property
    def server_url(self) -> str:
        """The base URL of the ds-sandbox server that holds this sandbox."""
        return self._t.base_url

    def _path(self, *parts: Any) -> str:
        return "/v1/sandboxes/" + _seg(self.sandbox_id) + "".join("/" + p for p in parts)

    # -- lifecycle --------------------------------------------------------------

    @classmethod
    def create(cls, template: Union[Template, str, None] = None, config: Optional[SandboxConfig] = None,
               envs: Optional[Mapping[str, str]] = None, metadata: Optional[Mapping[str, str]] = None,
               timeout: Optional[float] = None, workspace_id: Optional[str] = None, *,
               backend: Optional[str] = None, user: Optional[str] = None, workdir: Optional[str] = None,
               allow_internet: Optional[bool] = None, network_policy: Optional[str] = None,
               network_whitelist: Optional[list[str]] = None, scanner_mode: Optional[str] = None,
               memory_mb: Optional[int] = None, cpu_count: Optional[int] = None,
               pids_limit: Optional[int] = None, max_open_files: Optional[int] = None,
               max_output_bytes: Optional[int] = None, disk_quota_mb: Optional[int] = None,
               engine: Optional[str] = None) -> "Sandbox":
        """Create a sandbox.

        ``template``: a Template, or the id of a template stored on the server
        (as is a Template with nothing but an id).
        ``config``: a SandboxConfig whose set fields give the server, the user,
        workdir, network policy, backend and run_code timeout defaults.
        ``envs``: environment variables of its code and commands. ``metadata``:
        free-form labels (``Sandbox.list(metadata=...)`` filters on them).
        ``timeout``: the sandbox's lifetime in seconds (the server's default when
        None). ``workspace_id``: attach a named workspace, created when missing
        and kept after kill; without one the sandbox gets a fresh workspace that
        is removed when it is killed (unless the server names a default one).

        The keyword-only arguments override the config: ``backend`` ("local",
        "oci", …), ``user``, ``workdir``, the sandbox-wide network policy
        (as in run_code), and ``scanner_mode``: the code scanner's mode for this
        sandbox ("off", "warn", "block"), which can only make the server's
        configured mode (warn by default) stricter. ``engine`` ("ipykernel" or
        "lean") runs its code contexts instead of the server's configured one
        (a template's engine wins); ``info.engine`` says which runs.
        The resource limits ``memory_mb``, ``cpu_count``, ``pids_limit``,
        ``max_open_files``, ``max_output_bytes`` and ``disk_quota_mb`` override
        the server's defaults (a template's win); a backend that cannot enforce
        one refuses the sandbox (UnsupportedError), and ``info.limits`` says
        what is in force.
        """
        cfg = config
        t = cfg._transport() if cfg is not None else transport_for()
        req: dict[str, Any] = {}
        if isinstance(template, Template):
            if template.copy_files:
                raise InvalidArgumentError("invalid_argument",
                                           "template copy_files is not supported; use files={...} or sbx.files.upload")
            spec = template.to_dict()
            if set(spec) == {"id"}:
                req["template"] = spec["id"]  # Template("id") alone names a stored template
            else:
                req["template_spec"] = spec
        elif isinstance(template, str) and template:
            req["template"] = template
        elif template is not None:
            raise TypeError(f"template must be a Template or a template id, not {type(template).__name__}")
        if cfg is not None:
            if cfg.is_set("default_backend") and cfg.default_backend and cfg.default_backend != "auto":
                req["backend"] = cfg.default_backend
            if cfg.is_set("default_user"):
                req["user"] = cfg.default_user
            if cfg.is_set("default_workdir"):
                req["workdir"] = cfg.default_workdir
            net = cfg._network()
            if net is not None:
                req["network"] = net
        if backend:
            req["backend"] = backend
        if user:
            req["user"] = user
        if workdir:
            req["workdir"] = workdir
        net = _network_policy(allow_internet, network_policy, network_whitelist)
        if net is not None:
            req["network"] = net
        if envs:
            req["envs"] = _str_map("envs", envs)
        if metadata:
            req["metadata"] = _str_map("metadata", metadata)
        if timeout is not None:
            if timeout <= 0:
                raise ValueError(f"timeout {timeout!r}: want a positive number of seconds")
            req["timeout"] = int(math.ceil(timeout))
        if workspace_id:
            req["workspace_id"] = str(workspace_id)
        if scanner_mode:
            req["scanner_mode"] = str(scanner_mode)
        if engine:
            req["engine"] = str(engine)
        for name, v in (("memory_mb", memory_mb), ("cpu_count", cpu_count), ("pids_limit", pids_limit),
                        ("max_open_files", max_open_files), ("max_output_bytes", max_output_bytes),
                        ("disk_quota_mb", disk_quota_mb)):
            if v is not None:
                req[name] = int(v)
        doc = t.call("POST", "/v1/sandboxes", json_body=req)
        sbx = cls(t, SandboxInfo._from_wire(doc or {}), cfg)
        t.own(sbx.sandbox_id)
        return sbx

    @classmethod
    def connect(cls, sandbox_id: str, config: Optional[SandboxConfig] = None) -> "Sandbox":
        """Attach to a running sandbox by id (from this or another process).
        NotFoundError when there is no such sandbox."""
        t = config._transport() if config is not None else transport_for()
        doc = t.call("GET", "/v1/sandboxes/" + _seg(sandbox_id))
        return cls(t, SandboxInfo._from_wire(doc or {}), config)

    @classmethod
    def list(cls, config: Optional[SandboxConfig] = None, state: Optional[str] = None,
             metadata: Optional[Mapping[str, str]] = None) -> list[SandboxInfo]:
        """The sandboxes of this server (that the API key may see), optionally only
        those in ``state`` ("running") and carrying every ``metadata`` pair."""
        t = config._transport() if config is not None else transport_for()
        q: dict[str, Any] = {}
        if state:
            q["state"] = state
        if metadata:
            q["metadata"] = [f"{k}={v}" for k, v in metadata.items()]
        docs = t.call("GET", "/v1/sandboxes", query=q) or []
        return [SandboxInfo._from_wire(d) for d in docs]

    def get_info(self) -> SandboxInfo:
        """The sandbox as the server sees it now (state, deadline, workspace, …)."""
        self._info = SandboxInfo._from_wire(self._t.call("GET", self._path()) or {})
        return self._info

    def set_timeout(self, timeout: float) -> None:
        """Move the sandbox's deadline to now + ``timeout`` seconds."""
        if timeout <= 0:
            raise ValueError(f"timeout {timeout!r}: want a positive number of seconds")
        doc = self._t.call("POST", self._path("timeout"), json_body={"timeout": int(math.ceil(timeout))})
        if doc:
            self._info = SandboxInfo._from_wire(doc)

    def set_network(self, network_policy: Optional[str] = None, network_whitelist: Optional[list[str]] = None,
                    allow_internet: Optional[bool] = None) -> None:
        """Change the sandbox's own network policy from now on ("allow", "deny"
        or "whitelist" with its destinations; ``allow_internet=False`` means
        deny). Its running cells finish first. Where a running sandbox's
        network cannot change (the local backend; docker on Docker's own
        networks; a sandbox created with deny) it raises UnsupportedError and
        the policy stays as it was."""
        net = _network_policy(allow_internet, network_policy, network_whitelist)
        if net is None:
            raise InvalidArgumentError("invalid_argument", "set_network: give network_policy, network_whitelist or allow_internet")
        doc = self._t.call("PUT", self._path("network"), json_body=net)
        if doc:
            self._info = SandboxInfo._from_wire(doc)

    def is_running(self) -> bool:
        """Whether the sandbox still runs (False once killed or expired)."""
        try:
            return self.get_info().state == "running"
        except NotFoundError:
            return False

    def kill(self) -> bool:
        """Kill the sandbox: its processes stop and an anonymous workspace is
        removed (a named one is kept). True if it was killed now, False if it was
        already gone."""
        try:
            self._t.call("DELETE", self._path())
        except NotFoundError:
            self._t.disown(self.sandbox_id)
            return False
        self._t.disown(self.sandbox_id)
        return True

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.kill()
        except SandboxError:
            if exc[0] is None:
                raise

    # -- code -------------------------------------------------------------------

    def run_code(self, code: str, timeout: Optional[float] = None, allow_internet: Optional[bool] = None,
                 network_policy: Optional[str] = None, network_whitelist: Optional[list[str]] = None,
                 on_stdout: Optional[Callable[[str], Any]] = None, on_stderr: Optional[Callable[[str], Any]] = None,
                 on_result: Optional[Callable[[Result], Any]] = None,
                 on_error: Optional[Callable[[ExecutionError], Any]] = None,
                 context: Union[Context, str, None] = None, envs: Optional[Mapping[str, str]] = None,
                 language: Optional[str] = None, scanner_mode: Optional[str] = None) -> Execution:
        """Run ``code`` as one Jupyter cell in the sandbox's kernel (state carries
        over between calls) and return the Execution.

        ``timeout`` (seconds) interrupts the cell when it runs longer; the
        Execution's error is then a TimeoutError and the kernel and its state live
        on. Default: the config's ``default_timeout_sec`` when set, else the
        server's default.

        ``allow_internet`` / ``network_policy`` / ``network_whitelist`` set the
        network policy of this cell only ("allow", "deny", "whitelist";
        ``allow_internet=False`` means deny). A backend that cannot enforce the
        policy refuses it with UnsupportedError rather than run unprotected.

        ``on_stdout`` / ``on_stderr`` get each output chunk (str) as it is
        printed, ``on_result`` each Result, ``on_error`` the ExecutionError, all
        while the cell runs, in this thread. ``context`` (a Context or its id)
        picks a kernel other than the default one; ``envs`` are set in
        ``os.environ`` for this cell only.

        The server's code scanner reports what it saw in ``Execution.findings``.
        ``scanner_mode`` ("warn" or "block") makes it stricter for this cell; a
        mode looser than the sandbox's raises PermissionDeniedError. A cell the
        scanner blocks does not run, and its ``error`` is a
        "SecurityScanFailedError".

        A Python exception of the code is not raised here: it is in
        ``Execution.error``. SandboxError subclasses are raised when ds-sandbox
        itself refuses or fails (an unknown sandbox, empty code, …).
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if language not in (None, "python", "python3", "py"):
            raise InvalidArgumentError("invalid_argument",
                                       f"language {language!r}: ds-sandbox runs Python only")
        req: dict[str, Any] = {"code": code}
        if context is not None:
            req["context_id"] = context.id if isinstance(context, Context) else str(context)
        if timeout is None and self._config is not None and self._config.is_set("default_timeout_sec"):
            timeout = self._config.default_timeout_sec
        if timeout is not None:
            if timeout < 0:
                raise ValueError(f"timeout {timeout!r}: want a non-negative number of seconds")
            if timeout > 0:
                req["timeout_ms"] = max(1, int(round(timeout * 1000)))
        if envs:
            req["envs"] = _str_map("envs", envs)
        net = _network_policy(allow_internet, network_policy, network_whitelist)
        if net is not None:
            req["network"] = net
        if scanner_mode:
            req["scanner_mode"] = str(scanner_mode)
        read_timeout = (timeout + STREAM_GRACE) if timeout else None
        execution = Execution()
        ended = False
        with self._t.open("POST", self._path("execute"), json_body=req, timeout=read_timeout) as stream:
            for ev in stream.events():
                typ = ev.get("type")
                if typ == "stdout":
                    text = ev.get("text", "")
                    execution.logs.stdout.append(text)
                    if on_stdout:
                        on_stdout(text)
                elif typ == "stderr":
                    text = ev.get("text", "")
                    execution.logs.stderr.append(text)
                    if on_stderr:
                        on_stderr(text)
                elif typ == "result":
                    if ev.get("result") is not None:
                        r = Result._from_wire(ev["result"])
                        execution.results.append(r)
                        if on_result:
                            on_result(r)
                elif typ == "error":
                    execution.error = ExecutionError._from_wire(ev.get("error") or {"name": "Error", "value": ev.get("text", "")})
                    execution.oom_killed = execution.oom_killed or bool(ev.get("oom_killed"))
                    if on_error and execution.error:
                        on_error(execution.error)
                elif typ == "notice":
                    execution.notices.append(ev.get("text", ""))
                    execution.truncated = execution.truncated or bool(ev.get("truncated"))
                elif typ == "network_denied":
                    if ev.get("denial") is not None:
                        execution.network_denials.append(NetworkDenial._from_wire(ev["denial"]))
                elif typ == "scan":
                    execution.findings.extend(Finding._from_wire(f) for f in ev.get("findings") or [])
                elif typ == "end":
                    execution.execution_count = ev.get("execution_count") or None
                    ended = True
                    break
        if not ended:
            why = "the sandbox died or the connection broke"
            if execution.error is not None and execution.error.name == "SandboxError":
                why = execution.error.value  # the server's in-band explanation
            raise UnavailableError("unavailable",
                                   f"sandbox {self.sandbox_id}: the execution ended before the cell did: {why}")
        return execution

    def create_code_context(self, cwd: Optional[str] = None, language: Optional[str] = None) -> Context:
        """A new code context: a kernel of its own, with its own state, working in
        ``cwd`` (relative to the workdir)."""
        req: dict[str, Any] = {}
        if language:
            req["language"] = language
        if cwd:
            req["cwd"] = cwd
        return Context._from_wire(self._t.call("POST", self._path("contexts"), json_body=req) or {})

    def list_code_contexts(self) -> list[Context]:
        return [Context._from_wire(d) for d in self._t.call("GET", self._path("contexts")) or []]

    def restart_code_context(self, context: Union[Context, str]) -> None:
        """Restart the context's kernel: its state is lost."""
        cid = context.id if isinstance(context, Context) else str(context)
        self._t.call("POST", self._path("contexts", _seg(cid), "restart"))

    def remove_code_context(self, context: Union[Context, str]) -> None:
        cid = context.id if isinstance(context, Context) else str(context)
        self._t.call("DELETE", self._path("contexts", _seg(cid)))

    # -- datasets ------------------------------------------------------------------

    def prepare_dataset(self, name: str, strategy: Optional[str] = None) -> str:
        """Put a registered dataset into the workspace's data/ ("copy" or "link");
        returns its path inside the sandbox."""
        req: dict[str, Any] = {"name": name}
        if strategy:
            req["strategy"] = strategy
        doc = self._t.call("POST", self._path("datasets"), json_body=req) or {}
        return doc.get("path", "")


def register_dataset(source: Union[str, "os.PathLike[str]", IO[bytes]], name: str,
                     description: Optional[str] = None, tags: Optional[Iterable[str]] = None,
                     config: Optional[SandboxConfig] = None, *, filename: Optional[str] = None) -> Dataset:
    """Upload a local file to the server as the dataset ``name`` (``PUT
    /v1/datasets/{name}``, streamed in chunks, never read whole) and return its
    registry entry (format, size, sha256). ``source`` is a path or a binary file
    object; ``filename`` is the file's name in the registry (default: the base
    name of the path, or of the file object's ``name``; else ``name``), whose
    extension decides the format. Sandboxes
    then get it with ``prepare_dataset(name)``. A name already registered
    raises ``AlreadyExistsError``; a directory raises ``UnsupportedError``
    (register it on the server's host)."""
    t = config._transport() if config is not None else transport_for()
    q: dict[str, Any] = {"description": description or None, "tag": list(tags) if tags else None}

    def chunks(f: IO[bytes]):
        while True:
            b = f.read(CHUNK)
            if not b:
                return
            if isinstance(b, str):
                raise TypeError("register_dataset: open the file in binary mode ('rb')")
            yield bytes(b)

    def put(f: IO[bytes], fname: Optional[str]) -> Dataset:
        q["filename"] = fname or None
        doc = t.call("PUT", "/v1/datasets/" + _seg(name), query=q, body=chunks(f),
                     content_type="application/octet-stream")
        return Dataset._from_wire(doc or {})

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            raise UnsupportedError("unsupported", f"register_dataset: {path!r} is a directory; only files are "
                                   "uploaded (register a directory on the server's host: POST /v1/datasets)")
        with open(path, "rb") as f:
            return put(f, filename or os.path.basename(path))
    if not callable(getattr(source, "read", None)):
        raise TypeError(f"register_dataset: source must be a path or a binary file object, not {type(source).__name__}")
    fname = filename
    if fname is None and isinstance(getattr(source, "name", None), str):
        fname = os.path.basename(source.name)
    return put(source, fname)


def remove_dataset(name: str, config: Optional[SandboxConfig] = None) -> None:
    """Remove a dataset from the server's registry; copies already prepared
    into workspaces stay."""
    t = config._transport() if config is not None else transport_for()
    t.call("DELETE", "/v1/datasets/" + _seg(name))


def list_datasets(name_contains: Optional[str] = None, tag: Optional[str] = None,
                  format: Optional[str] = None, config: Optional[SandboxConfig] = None) -> list[Dataset]:
    """The datasets registered on the server, optionally filtered."""
    t = config._transport() if config is not None else transport_for()
    q = {"name_contains": name_contains or None, "tag": tag or None, "format": format or None}
    return [Dataset._from_wire(d) for d in t.call("GET", "/v1/datasets", query=q) or []]
