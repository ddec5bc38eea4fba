"""Template: a sandbox environment (user, workdir, env, files, commands)."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["Template"]

# Wire fields of api.Template, in order.
_FIELDS = ("id", "name", "description", "image", "env", "files", "user", "workdir", "cmd",
           "start_cmd", "ready_cmd", "ready_timeout", "cpu_count", "memory_mb", "pids_limit",
           "max_open_files", "max_output_bytes", "disk_quota_mb", "run_cmds", "aliases", "metadata",
           "scanner_mode", "engine", "preload")


def _str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


class Template:
    """A sandbox template, with the seed's fields.

    Every field defaults to None, meaning "the server's default", and only the
    fields you set are sent: on the local backend the server refuses ``image``,
    ``cpu_count``, ``memory_mb`` and ``pids_limit`` (it could not enforce them), so
    they must not be sent unless asked for. ``pids_limit``, ``max_open_files``,
    ``max_output_bytes`` and ``disk_quota_mb`` are resource limits as in
    ``Sandbox.create``. ``files`` are written into the workdir when a sandbox
    starts; ``env`` is set for its code and commands. ``scanner_mode`` ("off",
    "warn", "block") makes the server's code scanner stricter for its sandboxes.
    ``engine`` ("ipykernel" or "lean") runs its code contexts, and ``preload``
    lists Python modules every fresh engine imports before its first cell.

    ``copy_files`` and ``skip_cache`` are accepted for compatibility with the
    seed's builder: ``skip_cache`` has no effect (nothing is cached), and a
    sandbox is refused for a template with ``copy_files`` (use ``files`` or
    ``sbx.files.upload``).
    """

    def __init__(self, id: Optional[str] = None, name: Optional[str] = None,
                 description: Optional[str] = None, image: Optional[str] = None,
                 env: Optional[dict[str, str]] = None, files: Optional[dict[str, str]] = None,
                 cmd: Optional[str] = None, start_cmd: Optional[str] = None,
                 ready_cmd: Optional[str] = None, ready_timeout: Optional[int] = None,
                 user: Optional[str] = None, workdir: Optional[str] = None,
                 cpu_count: Optional[int] = None, memory_mb: Optional[int] = None,
                 pids_limit: Optional[int] = None, max_open_files: Optional[int] = None,
                 max_output_bytes: Optional[int] = None, disk_quota_mb: Optional[int] = None,
                 copy_files: Optional[list[dict[str, str]]] = None,
                 run_cmds: Optional[list[str]] = None, aliases: Optional[list[str]] = None,
                 skip_cache: bool = False, metadata: Optional[dict[str, str]] = None,
                 scanner_mode: Optional[str] = None, engine: Optional[str] = None,
                 preload: Optional[list[str]] = None):
        self.id = id
        self.name = name
        self.description = description
        self.image = image
        self.env = env
        self.files = files
        self.cmd = cmd
        self.start_cmd = start_cmd
        self.ready_cmd = ready_cmd
        self.ready_timeout = ready_timeout
        self.user = user
        self.workdir = workdir
        self.cpu_count = cpu_count
        self.memory_mb = memory_mb
        self.pids_limit = pids_limit
        self.max_open_files = max_open_files
        self.max_output_bytes = max_output_bytes
        self.disk_quota_mb = disk_quota_mb
        self.copy_files = copy_files
        self.run_cmds = run_cmds
        self.aliases = aliases
        self.skip_cache = skip_cache
        self.metadata = metadata
        self.scanner_mode = scanner_mode
        self.engine = engine
        self.preload = preload

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as the server's JSON."""
        out: dict[str, Any] = {}
        for k in _FIELDS:
            v = getattr(self, k)
            if v is None:
                continue
            if k in ("env", "metadata", "files"):
                v = {str(a): _str(b) for a, b in dict(v).items()}
            elif k in ("run_cmds", "aliases", "preload"):
                v = [str(x) for x in v]
            elif k in ("ready_timeout", "cpu_count", "memory_mb", "pids_limit", "max_open_files",
                       "max_output_bytes", "disk_quota_mb"):
                v = int(v)
            out[k] = v
        return out

    _to_wire = to_dict

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Template":
        """A Template from the server's JSON (or a YAML file's keys)."""
        unknown = set(d) - set(_FIELDS) - {"copy_files", "skip_cache"}
        if unknown:
            raise ValueError(f"template: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in d.items() if v is not None})

    _from_wire = from_dict

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.to_dict().items()]
        if self.copy_files:
            parts.append(f"copy_files={self.copy_files!r}")
        return f"Template({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and self.to_dict() == other.to_dict() \
            and self.copy_files == other.copy_files
