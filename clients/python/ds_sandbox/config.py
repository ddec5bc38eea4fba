"""SandboxConfig: the seed's configuration object, and template loading."""

from __future__ import annotations

import functools
import os
from typing import Any, Optional

from ._errors import NotFoundError
from ._server import ENV_KEY, ENV_URL, transport_for
from ._transport import Transport
from .template import Template

__all__ = ["SandboxConfig"]

_POLICIES = ("allow", "deny", "whitelist")

# Every field of the seed's SandboxConfig with its default, plus api_key.
_DEFAULTS: dict[str, Any] = {
    "api_endpoint": "",
    "api_key": None,
    "default_backend": None,
    "default_isolation": "auto",
    "use_jupyter": False,
    "workspace_base_dir": "/opt/workspaces",
    "workspace_retention_days": 30,
    "paused_workspaces_base_dir": "/opt/paused",
    "paused_workspace_retention_days": 30,
    "dataset_registry_dir": "/opt/datasets",
    "default_dataset_strategy": "copy",
    "allow_internet": True,
    "default_network_policy": "allow",
    "network_whitelist": [],
    "default_timeout_sec": 3600,
    "default_memory_mb": 4096,
    "enable_gpu_by_default": False,
    "firecracker_pool_size": 5,
    "firecracker_memory_mb": 2048,
    "api_host": "0.0.0.0",
    "api_port": 8000,
    "enable_metrics": True,
    "enable_audit_log": True,
    "audit_log_path": "/var/log/ds-sandbox/audit.jsonl",
    "default_user": "user",
    "default_workdir": "/home/user",
    "templates_dir": "/etc/ds-sandbox/templates",
    "storage_mounts": {},
    "storage_base_dir": "/workspace/storage",
}


class _classorinstance:
    """A method callable on the class (the default server) or on an instance (the
    server that config names): ``SandboxConfig.load_template("t")`` and
    ``config.load_template("t")`` both work."""

    def __init__(self, f):
        self.f = f
        functools.update_wrapper(self, f)

    def __get__(self, obj, cls):
        return functools.partial(self.f, obj)


class SandboxConfig:
    """The seed's configuration, as seen from a client of a ds-sandbox server.

    Fields that shape a sandbox made with ``Sandbox.create(config=...)``:

    - ``api_endpoint`` / ``api_key``: the server and key (default: the
      ``DS_SANDBOX_URL`` / ``DS_SANDBOX_API_KEY`` environment variables, else a
      private server this process starts);
    - ``default_user``, ``default_workdir``: the sandbox's user and workdir (a
      template's win over them);
    - ``allow_internet``, ``default_network_policy``, ``network_whitelist``: the
      sandbox's network policy (``allow_internet=False`` means "deny");
    - ``default_timeout_sec``: the default timeout of each ``run_code``;
    - ``default_backend``: the isolation backend ("local", "oci", "docker", …).

    Only the fields you set (or ``from_env`` read) are sent; the others leave the
    server's own configuration in force. The remaining seed fields (directories,
    memory, GPU, ports, …) are server settings: they are accepted and kept so
    existing code runs, and have no effect from the client.
    """

    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"SandboxConfig: unknown field(s) {', '.join(sorted(unknown))}")
        for k, v in _DEFAULTS.items():
            setattr(self, k, kwargs[k] if k in kwargs else (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v))
        self._explicit = set(kwargs)
        if self.default_network_policy not in _POLICIES:
            raise ValueError(f"default_network_policy {self.default_network_policy!r}: want one of {', '.join(_POLICIES)}")
        if isinstance(self.network_whitelist, str):
            self.network_whitelist = [s.strip() for s in self.network_whitelist.split(",") if s.strip()]
        if not isinstance(self.default_timeout_sec, (int, float)) or not 1 <= self.default_timeout_sec <= 86400:
            raise ValueError(f"default_timeout_sec {self.default_timeout_sec!r}: want 1..86400 seconds")

    def __repr__(self) -> str:
        set_ = ", ".join(f"{k}={getattr(self, k)!r}" for k in _DEFAULTS if k in self._explicit and k != "api_key")
        return f"SandboxConfig({set_})"

    def is_set(self, name: str) -> bool:
        """Whether the field was given (to the constructor or by from_env)."""
        return name in self._explicit

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _DEFAULTS and "_explicit" in self.__dict__:
            self._explicit.add(name)

    # -- loaders ------------------------------------------------------------

    @classmethod
    def from_env(cls) -> "SandboxConfig":
        """A config from the seed's SANDBOX_* variables (and DS_SANDBOX_URL /
        DS_SANDBOX_API_KEY). Variables that are unset leave the default."""
        env = os.environ
        kw: dict[str, Any] = {}

        def s(var: str, key: str) -> None:
            if env.get(var):
                kw[key] = env[var]

        def b(var: str, key: str) -> None:
            if env.get(var):
                kw[key] = env[var].strip().lower() in ("1", "true", "yes", "on")

        def i(var: str, key: str) -> None:
            if env.get(var):
                try:
                    kw[key] = int(env[var])
                except ValueError:
                    raise ValueError(f"{var}={env[var]!r}: want an integer") from None

        s(ENV_URL, "api_endpoint")
        s(ENV_KEY, "api_key")
        s("SANDBOX_DEFAULT_BACKEND", "default_backend")
        s("SANDBOX_DEFAULT_ISOLATION", "default_isolation")
        s("SANDBOX_WORKSPACE_BASE", "workspace_base_dir")
        s("SANDBOX_DATASET_DIR", "dataset_registry_dir")
        b("SANDBOX_ALLOW_INTERNET", "allow_internet")
        s("SANDBOX_NETWORK_POLICY", "default_network_policy")
        if env.get("SANDBOX_NETWORK_WHITELIST"):
            kw["network_whitelist"] = [x.strip() for x in env["SANDBOX_NETWORK_WHITELIST"].split(",") if x.strip()]
        i("SANDBOX_TIMEOUT", "default_timeout_sec")
        i("SANDBOX_MEMORY_MB", "default_memory_mb")
        b("SANDBOX_ENABLE_GPU", "enable_gpu_by_default")
        s("SANDBOX_DEFAULT_USER", "default_user")
        s("SANDBOX_DEFAULT_WORKDIR", "default_workdir")
        s("SANDBOX_TEMPLATES_DIR", "templates_dir")
        return cls(**kw)

    # -- what the client uses ---------------------------------------------------

    def _transport(self) -> Transport:
        return transport_for(self.api_endpoint or None, self.api_key)

    def _network(self) -> Optional[dict[str, Any]]:
        """The sandbox network policy this config asks for, or None (server default)."""
        if not (self._explicit & {"allow_internet", "default_network_policy", "network_whitelist"}):
            return None
        policy = self.default_network_policy if self.allow_internet else "deny"
        if policy == "allow" and not self.is_set("default_network_policy") and self.network_whitelist \
                and self.allow_internet:
            policy = "whitelist"
        net: dict[str, Any] = {"policy": policy}
        # The whitelist means something only under the whitelist policy (the
        # seed's "allow" with a whitelist allows everything); the server refuses
        # entries under another policy, so they are not sent.
        if policy == "whitelist":
            net["whitelist"] = list(self.network_whitelist)
        return net

    # -- templates (class or instance) -----------------------------------------------

    @_classorinstance
    def load_template(self: Optional["SandboxConfig"], template_id: str,
                      templates_dir: Optional[str] = None) -> Optional[Template]:
        """The template ``template_id`` from the server's templates directories
        (YAML files, ``{dir}/{id}.yaml`` or ``.yml``), or None when there is none.

        With ``templates_dir`` (or a config whose ``templates_dir`` was set) the
        file is read from that directory on this machine instead; a malformed
        file raises ValueError.
        """
        d = templates_dir or (self.templates_dir if self is not None and self.is_set("templates_dir") else None)
        if d:
            from ._yaml import load_template_file
            return load_template_file(d, template_id)
        t = _transport_of(self)
        try:
            doc = t.call("GET", "/v1/templates/" + _seg(template_id))
        except NotFoundError:
            return None
        return Template.from_dict(doc or {})

    @_classorinstance
    def list_templates(self: Optional["SandboxConfig"], templates_dir: Optional[str] = None) -> list[str]:
        """The ids of the templates the server knows (or, with ``templates_dir``,
        of the YAML files in that local directory), sorted."""
        d = templates_dir or (self.templates_dir if self is not None and self.is_set("templates_dir") else None)
        if d:
            from ._yaml import list_template_files
            return list_template_files(d)
        docs = _transport_of(self).call("GET", "/v1/templates") or []
        return sorted(x.get("id", "") for x in docs)

    @_classorinstance
    def get_templates(self: Optional["SandboxConfig"]) -> list[Template]:
        """Every template the server knows, in full."""
        docs = _transport_of(self).call("GET", "/v1/templates") or []
        return [Template.from_dict(x) for x in docs]

    @_classorinstance
    def save_template(self: Optional["SandboxConfig"], template: Template) -> Template:
        """Store ``template`` on the server (as YAML in its templates directory),
        replacing one with the same id; it can then be named by id in
        ``Sandbox.create(template="id")``."""
        if not template.id:
            raise ValueError("save_template: the template needs an id")
        doc = _transport_of(self).call("PUT", "/v1/templates/" + _seg(template.id), json_body=template.to_dict())
        return Template.from_dict(doc) if doc else template

    @_classorinstance
    def delete_template(self: Optional["SandboxConfig"], template_id: str) -> bool:
        """Remove a stored template; False when there was none."""
        try:
            _transport_of(self).call("DELETE", "/v1/templates/" + _seg(template_id))
        except NotFoundError:
            return False
        return True


def _transport_of(cfg: Optional[SandboxConfig]) -> Transport:
    return cfg._transport() if cfg is not None else transport_for()


def _seg(s: str) -> str:
    import urllib.parse
    if not s:
        raise ValueError("empty id")
    return urllib.parse.quote(str(s), safe="")
