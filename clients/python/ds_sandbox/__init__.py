"""ds-sandbox: run untrusted Python in sandboxes on your own machine.

The Python client of a ``ds-sandbox serve`` daemon, with the seed project's API::

    from ds_sandbox import Sandbox

    with Sandbox.create() as sbx:
        execution = sbx.run_code("x = 41\\nx + 1")
        print(execution.text)  # 42

The server is ``DS_SANDBOX_URL`` (or ``SandboxConfig(api_endpoint=...)``), with
the key in ``DS_SANDBOX_API_KEY``; without one the client starts a private
``ds-sandbox serve`` (the binary named by ``DS_SANDBOX_BIN``, else ``ds-sandbox`` on
PATH) and stops it when the interpreter exits. Standard library only.
"""

from ._errors import (
    AlreadyExistsError,
    InsufficientStorageError,
    InternalError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    SandboxError,
    SandboxFileNotFoundError,
    SandboxTimeoutError,
    ServerStartError,
    TooLargeError,
    UnavailableError,
    UnsupportedError,
)
from ._server import private_server_url, shutdown_private_server
from .commands import CommandHandle, Commands
from .config import SandboxConfig
from .files import Files, ReadStream, WatchHandle
from .models import (
    CommandResult,
    Context,
    Dataset,
    EntryInfo,
    Execution,
    ExecutionError,
    Finding,
    FilesystemEvent,
    Logs,
    NetworkDenial,
    NetworkPolicy,
    ProcessInfo,
    Result,
    SandboxInfo,
)
from .sandbox import Sandbox, list_datasets, register_dataset, remove_dataset
from .template import Template

__version__ = "0.1.0"

# The seed's name for what run_code returns.
CodeResult = Execution

__all__ = [
    "Sandbox", "SandboxConfig", "Template", "list_datasets", "register_dataset", "remove_dataset",
    "Execution", "CodeResult", "Logs", "Result", "ExecutionError", "Finding", "Context",
    "SandboxInfo", "NetworkPolicy", "NetworkDenial", "Dataset",
    "Files", "EntryInfo", "FilesystemEvent", "WatchHandle", "ReadStream",
    "Commands", "CommandHandle", "CommandResult", "ProcessInfo",
    "SandboxError", "NotFoundError", "SandboxFileNotFoundError", "InvalidArgumentError",
    "AlreadyExistsError", "UnsupportedError", "LimitExceededError", "PermissionDeniedError",
    "UnavailableError", "ServerStartError", "SandboxTimeoutError", "InternalError",
    "TooLargeError", "InsufficientStorageError",
    "private_server_url", "shutdown_private_server", "__version__",
]
