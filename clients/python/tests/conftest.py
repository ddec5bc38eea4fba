"""Test setup: a real ds-sandbox daemon, started by the client itself.

DS_SANDBOX_BIN names the binary (scripts/test-python.sh builds it); without it
the tests use <repo>/bin/ds-sandbox, building it with `go build` when missing.
Every test in this process shares ONE private server that the client starts on
first use (no DS_SANDBOX_URL), with SANDBOX_STATE_DIR in a temporary directory.
The README blocks run in subprocesses, each starting its own private server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.dirname(TESTS_DIR)
REPO_DIR = os.path.dirname(os.path.dirname(CLIENT_DIR))

# Import the client under test: the installed one when PYTHONPATH names it,
# else the source tree.
try:
    import ds_sandbox  # noqa: F401
except ImportError:
    sys.path.insert(0, CLIENT_DIR)
    import ds_sandbox  # noqa: F401


def _find_binary() -> str:
    b = os.environ.get("DS_SANDBOX_BIN")
    if b:
        return os.path.abspath(b)
    b = os.path.join(REPO_DIR, "bin", "ds-sandbox")
    if not os.path.exists(b) and shutil.which("go"):
        subprocess.run(["go", "build", "-o", b, "./cmd/ds-sandbox"], cwd=REPO_DIR, check=True,
                       env={**os.environ, "CGO_ENABLED": "0"})
    return b


_STATE = tempfile.mkdtemp(prefix="ds-sandbox-pytest-")


def pytest_configure(config):
    b = _find_binary()
    if not os.path.exists(b):
        raise pytest.UsageError(f"no ds-sandbox binary at {b}: set DS_SANDBOX_BIN or build it")
    os.environ["DS_SANDBOX_BIN"] = b
    # This process's private server: auto-started by the client on first use.
    os.environ.pop("DS_SANDBOX_URL", None)
    os.environ.pop("DS_SANDBOX_API_KEY", None)
    os.environ["SANDBOX_STATE_DIR"] = os.path.join(_STATE, "state")
    os.environ.setdefault("DS_SANDBOX_START_TIMEOUT", "60")
    # The client's behaviour is tested on the local backend, whose refusals
    # (network policies, limits) some tests check; the default (auto) and the
    # isolating backends are the Go suites'.
    os.environ.setdefault("SANDBOX_DEFAULT_BACKEND", "local")
    # SANDBOX_ENGINE (ipykernel, the default, or lean) is the daemon's
    # engine: the same tests run on either.


# Engines whose runs are skipped, and why: the one place to change when
# one is wired in.
_ENGINES_NOT_WIRED = {}


def pytest_collection_modifyitems(config, items):
    why = _ENGINES_NOT_WIRED.get(os.environ.get("SANDBOX_ENGINE", ""))
    if why:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=why))


def pytest_unconfigure(config):
    ds_sandbox.shutdown_private_server()
    shutil.rmtree(_STATE, ignore_errors=True)


@pytest.fixture(scope="session")
def state_dir() -> str:
    return os.environ["SANDBOX_STATE_DIR"]


@pytest.fixture(scope="session")
def scratch_dir() -> str:
    d = os.path.join(_STATE, "scratch")
    os.makedirs(d, exist_ok=True)
    return d


@pytest.fixture
def sbx():
    from ds_sandbox import Sandbox
    s = Sandbox.create()
    yield s
    s.kill()


def pytest_report_header(config):
    return [f"ds_sandbox: {ds_sandbox.__file__}", f"ds-sandbox binary: {os.environ.get('DS_SANDBOX_BIN')}"]
