"""The client's API against a real daemon (auto-started by the client)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

import ds_sandbox
from _helpers import processes_mentioning
from ds_sandbox import (
    CommandHandle,
    CommandResult,
    Context,
    EntryInfo,
    Execution,
    FilesystemEvent,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    Result,
    Sandbox,
    SandboxConfig,
    SandboxError,
    SandboxFileNotFoundError,
    ServerStartError,
    Template,
    UnsupportedError,
)


# -- code -----------------------------------------------------------------------------


def test_run_code_is_stateful(sbx):
    e1 = sbx.run_code("x = 41")
    e2 = sbx.run_code("x + 1")
    assert isinstance(e2, Execution)
    assert e2.text == "42"
    assert e2.error is None
    assert e2.execution_count == e1.execution_count + 1
    assert [r.is_main_result for r in e2.results] == [True]


def test_logs(sbx):
    e = sbx.run_code("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert "".join(e.logs.stdout) == "out\n"
    assert "".join(e.logs.stderr) == "err\n"
    assert e.text is None
    assert repr(e.logs) == "Logs(stdout: ['out\\n'], stderr: ['err\\n'])"


def test_png_result_from_matplotlib(sbx):
    e = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()")
    assert e.error is None, e.error
    pngs = [r for r in e.results if r.png]
    assert pngs, e.results
    r = pngs[0]
    assert r.png_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "png" in r.formats()
    assert r["png"] == r.png and "png" in r
    assert not r.is_main_result
    assert "Result(" in repr(r)


def test_html_result_from_pandas(sbx):
    e = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})")
    assert e.error is None, e.error
    main = [r for r in e.results if r.is_main_result]
    assert len(main) == 1
    r = main[0]
    assert "<table" in r.html
    assert r.formats()[:2] == ["text", "html"]
    assert e.text is not None and "a" in e.text
    assert r._repr_html_() == r.html
    assert repr(r) == f"Result({r.text})"


def test_rich_formats(sbx):
    e = sbx.run_code(
        "from IPython.display import display, Markdown, SVG, Latex, JSON, HTML\n"
        "display(Markdown('# hi'))\n"
        "display(Latex(r'$x^2$'))\n"
        "display(JSON({'k': [1, 2]}))\n"
        "display({'text/plain': 'plain', 'application/x-custom': 'c'}, raw=True)\n")
    assert e.error is None, e.error
    fmts = [r.formats() for r in e.results]
    assert any("markdown" in f for f in fmts), fmts
    assert any("latex" in f for f in fmts), fmts
    js = [r for r in e.results if r.json is not None]
    assert js and js[0].json == {"k": [1, 2]}
    custom = [r for r in e.results if "application/x-custom" in r.extra]
    assert custom and custom[0].formats() == ["text", "application/x-custom"]


def test_error(sbx):
    errors = []
    e = sbx.run_code("def f():\n    return 1 / 0\nf()", on_error=errors.append)
    assert e.error is not None
    assert e.error.name == "ZeroDivisionError"
    assert e.error.value == "division by zero"
    assert "ZeroDivisionError" in e.error.traceback
    assert errors == [e.error]
    assert json.loads(e.error.to_json())["name"] == "ZeroDivisionError"


def test_streaming_callbacks_arrive_before_the_cell_ends(sbx):
    seen: list[tuple[float, str]] = []
    results: list[Result] = []
    sbx.run_code("1")  # the kernel is up: what follows times the cell alone
    e = sbx.run_code(
        "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(1)\n'done'",
        on_stdout=lambda s: seen.append((time.monotonic(), s)),
        on_result=results.append)
    end = time.monotonic()
    assert "".join(s for _, s in seen) == "0\n1\n2\n"
    # The cell sleeps 2 s after its first print: a chunk that came with the
    # end was not streamed.
    first = seen[0][0]
    assert end - first > 1.5, "the first chunk did not arrive while the cell ran"
    assert [r.text for r in results] == ["'done'"]
    assert e.text == "'done'"


def test_timeout_interrupts_and_state_survives(sbx):
    sbx.run_code("x = 5")
    t = time.monotonic()
    e = sbx.run_code("import time\ntime.sleep(60)", timeout=2)
    assert time.monotonic() - t < 30
    assert e.error is not None and e.error.name == "TimeoutError", e.error
    assert sbx.run_code("x").text == "5"


def test_config_default_timeout(scratch_dir):
    with Sandbox.create(config=SandboxConfig(default_timeout_sec=1)) as s:
        e = s.run_code("import time\ntime.sleep(30)")
        assert e.error is not None and e.error.name == "TimeoutError"


def test_run_code_envs_and_sandbox_envs():
    with Sandbox.create(envs={"A": "1"}) as s:
        e = s.run_code("import os\n(os.environ.get('A'), os.environ.get('B'))", envs={"B": "2"})
        assert e.text == "('1', '2')"
        assert s.run_code("import os; 'B' in os.environ").text == "False"
        assert s.commands.run("echo $A").stdout == "1\n"


def test_code_contexts(sbx):
    sbx.files.make_dir("sub")
    ctx = sbx.create_code_context(cwd="sub")
    assert isinstance(ctx, Context) and ctx.id
    sbx.run_code("y = 'default'")
    sbx.run_code("y = 'other'", context=ctx)
    assert sbx.run_code("y").text == "'default'"
    assert sbx.run_code("y", context=ctx).text == "'other'"
    assert sbx.run_code("import os; os.getcwd()", context=ctx.id).text.endswith("/sub'")
    assert ctx.id in [c.id for c in sbx.list_code_contexts()]
    sbx.restart_code_context(ctx)
    assert sbx.run_code("y", context=ctx).error.name == "NameError"
    sbx.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in sbx.list_code_contexts()]


def test_python_only(sbx):
    with pytest.raises(InvalidArgumentError):
        sbx.run_code("console.log(1)", language="javascript")


# -- lifecycle --------------------------------------------------------------------------


def test_info_user_workdir_timeout(sbx):
    assert sbx.user == "user" and sbx.workdir == "/home/user"
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and info.state == "running"
    assert info.backend == "local"
    assert info.started_at is not None and info.end_at > info.started_at
    sbx.set_timeout(7200)
    later = sbx.get_info().end_at
    assert (later - info.started_at).total_seconds() > 3600
    assert sbx.is_running()


def test_create_timeout_is_the_lifetime():
    s = Sandbox.create(timeout=2)
    try:
        assert (s.get_info().end_at - s.get_info().started_at).total_seconds() <= 3
        deadline = time.monotonic() + 30
        while s.is_running() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not s.is_running()
    finally:
        s.kill()


def test_context_manager_kills():
    with Sandbox.create() as s:
        sid = s.sandbox_id
        assert s.run_code("1 + 1").text == "2"
    assert not s.is_running()
    with pytest.raises(NotFoundError):
        Sandbox.connect(sid)
    assert s.kill() is False


def test_connect_and_list():
    tag = uuid.uuid4().hex
    with Sandbox.create(metadata={"suite": tag, "n": 1}) as s:
        s.run_code("shared = 'yes'")
        other = Sandbox.connect(s.sandbox_id)
        assert other.run_code("shared").text == "'yes'"
        assert other.user == s.user and other.workdir == s.workdir
        found = Sandbox.list(metadata={"suite": tag})
        assert [i.sandbox_id for i in found] == [s.sandbox_id]
        assert found[0].metadata == {"suite": tag, "n": "1"}
        assert s.sandbox_id in [i.sandbox_id for i in Sandbox.list(state="running")]
        assert Sandbox.list(metadata={"suite": "no-" + tag}) == []


def test_named_workspace_outlives_the_sandbox():
    ws = "ws-" + uuid.uuid4().hex[:8]
    with Sandbox.create(workspace_id=ws) as s:
        s.files.write("keep.txt", "kept")
        assert s.get_info().workspace_id == ws
    with Sandbox.create(workspace_id=ws) as s:
        assert s.files.read("keep.txt") == "kept"


def test_errors():
    with pytest.raises(NotFoundError) as ei:
        Sandbox.connect("no-such-sandbox")
    assert ei.value.code == "not_found" and ei.value.status == 404
    assert ei.value.request_id
    assert "no-such-sandbox" in str(ei.value)
    with Sandbox.create() as s:
        with pytest.raises(InvalidArgumentError) as ei:
            s.run_code("")
        assert isinstance(ei.value, ValueError)
        assert ei.value.code == "invalid_argument"
    with pytest.raises(NotFoundError):
        s.run_code("1")
    with pytest.raises(InvalidArgumentError):
        Sandbox.create(timeout=10**9)


def test_network_deny_on_local_backend_is_refused():
    with pytest.raises(UnsupportedError) as ei:
        Sandbox.create(config=SandboxConfig(allow_internet=False))
    assert "local backend cannot enforce network policy" in ei.value.message
    with pytest.raises(UnsupportedError):
        Sandbox.create(config=SandboxConfig(default_network_policy="whitelist", network_whitelist=["pypi.org"]))
    with Sandbox.create() as s:
        with pytest.raises(UnsupportedError) as ei:
            s.run_code("1", allow_internet=False)
        assert "deny" in ei.value.message
        # the sandbox's own policy is fine
        assert s.run_code("1", allow_internet=True, network_policy="allow").text == "1"
        # nor can its own policy change (local runs on the host's network)
        with pytest.raises(UnsupportedError) as ei:
            s.set_network(network_policy="deny")
        assert "cannot change a running sandbox's network" in ei.value.message
        s.set_network(network_policy="allow")  # what it has: a no-op
        assert s.get_info().network.policy == "allow"
        with pytest.raises(InvalidArgumentError):
            s.set_network()


def test_config_user_workdir():
    cfg = SandboxConfig(default_user="admin", default_workdir="/home/admin")
    with Sandbox.create(config=cfg) as s:
        assert (s.user, s.workdir) == ("admin", "/home/admin")
        assert s.get_info().workdir == "/home/admin"
        # relative paths resolve against the workdir, for files and code alike
        assert s.files.write("f.txt", "x").path == "/home/admin/f.txt"
        assert s.run_code("open('f.txt').read()").text == "'x'"


# -- templates ------------------------------------------------------------------------


def test_inline_template():
    t = Template(env={"CUSTOM_VAR": "value"}, files={"setup.sh": "#!/bin/bash\necho hi\n", "d/c.json": "{}"},
                 user="developer", workdir="/home/developer")
    with Sandbox.create(template=t) as s:
        assert (s.user, s.workdir) == ("developer", "/home/developer")
        assert s.files.read("setup.sh") == "#!/bin/bash\necho hi\n"
        assert s.files.read("/home/developer/d/c.json") == "{}"
        assert s.run_code("import os; os.environ['CUSTOM_VAR']").text == "'value'"


def test_template_limits_are_refused_on_local():
    with pytest.raises(UnsupportedError) as ei:
        Sandbox.create(template=Template(cpu_count=2))
    assert "resource limits" in ei.value.message
    # unset limits are never sent
    assert Template(user="u").to_dict() == {"user": "u"}


def test_engine_and_preload():
    # The engine that runs is in the info; a template's preload list is
    # imported before the first cell, leaving no name behind.
    with Sandbox.create(template=Template(preload=["wave", "xml.dom.minidom"]), engine="ipykernel") as s:
        assert s.get_info().engine == "ipykernel"
        assert s.run_code("import sys; ('wave' in sys.modules, 'xml.dom.minidom' in sys.modules, 'wave' in dir())").text \
            == "(True, True, False)"
    with pytest.raises(InvalidArgumentError) as ei:
        Sandbox.create(engine="jupyter")
    assert 'engine: "jupyter" is not one of ipykernel, lean' in ei.value.message
    with pytest.raises(InvalidArgumentError) as ei:
        Sandbox.create(template=Template(preload=["os; import x"]))
    assert "preload" in ei.value.message
    assert Template(engine="lean", preload=["numpy"]).to_dict() == {"engine": "lean", "preload": ["numpy"]}


def test_limits_on_local():
    # pids cannot be bounded on local; open files and the output bound can.
    with pytest.raises(UnsupportedError) as ei:
        Sandbox.create(pids_limit=256)
    assert "pids_limit" in ei.value.message
    with Sandbox.create(max_open_files=256, max_output_bytes=4096) as s:
        assert s.get_info().limits["max_open_files"] == 256
        assert s.commands.run("ulimit -n").stdout.strip() == "256"
        e = s.run_code("print('x' * 10000)")
        assert e.truncated and len("".join(e.logs.stdout)) == 4096
        assert Template(pids_limit=300).to_dict() == {"pids_limit": 300}


def test_stored_templates():
    tid = "t-" + uuid.uuid4().hex[:8]
    assert SandboxConfig.load_template(tid) is None
    saved = SandboxConfig.save_template(Template(id=tid, name="T", env={"K": "v"}, workdir="/home/t"))
    assert saved.id == tid
    loaded = SandboxConfig.load_template(tid)
    assert loaded == Template(id=tid, name="T", env={"K": "v"}, workdir="/home/t")
    assert tid in SandboxConfig.list_templates()
    assert tid in SandboxConfig().list_templates()
    with Sandbox.create(template=Template(id=tid)) as s:
        assert s.workdir == "/home/t"
    with Sandbox.create(template=tid) as s:
        assert s.workdir == "/home/t"
        assert s.template_id == tid
        assert s.commands.run("echo $K").stdout == "v\n"
    assert SandboxConfig.delete_template(tid) is True
    assert SandboxConfig.delete_template(tid) is False
    with pytest.raises(NotFoundError):
        Sandbox.create(template=tid)


def test_load_template_from_local_dir(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        '# comment\nid: "mine"\nname: Mine\nenv:\n  A: "1"\n  B: two words\n'
        'files:\n  setup.sh: "#!/bin/bash\\necho \'Hello\'\\n"\n  block.txt: |\n    line 1\n    line 2\n'
        "user: developer\nworkdir: /home/developer\nready_timeout: 5\nrun_cmds:\n  - echo a\n  - 'echo b'\n"
        "aliases: [x, y]\n")
    (tmp_path / "other.yml").write_text("id: other\n")
    t = SandboxConfig.load_template("mine", templates_dir=str(tmp_path))
    assert t == Template(id="mine", name="Mine", env={"A": "1", "B": "two words"},
                         files={"setup.sh": "#!/bin/bash\necho 'Hello'\n", "block.txt": "line 1\nline 2\n"},
                         user="developer", workdir="/home/developer", ready_timeout=5,
                         run_cmds=["echo a", "echo b"], aliases=["x", "y"])
    assert SandboxConfig.load_template("nope", templates_dir=str(tmp_path)) is None
    assert SandboxConfig(templates_dir=str(tmp_path)).list_templates() == ["mine", "other"]


# -- files --------------------------------------------------------------------------------


def test_files_round_trip(sbx, tmp_path):
    blob = bytes(range(256)) * 4
    info = sbx.files.write("data/blob.bin", blob)
    assert isinstance(info, EntryInfo)
    assert info.path == "/home/user/data/blob.bin" and info.type == "file" and info.size == len(blob)
    assert sbx.files.read("data/blob.bin", format="bytes") == blob
    sbx.files.write("/home/user/u.txt", "héllo ✓")
    assert sbx.files.read("u.txt") == "héllo ✓"
    # file objects are streamed: binary, text, and bigger than one chunk
    big = os.urandom(3 * 1024 * 1024 + 7)
    assert sbx.files.write("big.bin", io.BytesIO(big)).size == len(big)
    assert sbx.files.read("big.bin", format="bytes") == big
    with sbx.files.read("big.bin", format="stream") as st:
        assert b"".join(st) == big
    sbx.files.write("t.txt", io.StringIO("text ✓\n" * 1000))
    assert sbx.files.read("t.txt") == "text ✓\n" * 1000
    # the list form and write_files
    out = sbx.files.write([{"path": "l/a", "data": "A"}, {"path": "l/b", "data": b"B"}])
    assert [e.name for e in out] == ["a", "b"]
    sbx.files.write_files({"l/c": "C"})
    assert sorted(e.name for e in sbx.files.list("l")) == ["a", "b", "c"]
    # the code sees the same files
    assert sbx.run_code("open('l/a').read() + open('l/c').read()").text == "'AC'"


def test_files_metadata_ops(sbx):
    assert not sbx.files.exists("nope")
    with pytest.raises(SandboxFileNotFoundError) as ei:
        sbx.files.read("nope")
    assert isinstance(ei.value, FileNotFoundError) and isinstance(ei.value, NotFoundError)
    with pytest.raises(FileNotFoundError):
        sbx.files.get_info("nope")
    d = sbx.files.make_dir("a/b/c")
    assert d.is_dir and d.path == "/home/user/a/b/c"
    sbx.files.write("a/b/f.txt", "x")
    assert sbx.files.exists("a/b/f.txt")
    info = sbx.files.get_info("a/b/f.txt")
    assert info.size == 1 and info.is_file and info.modified_time is not None
    names = {e.path for e in sbx.files.list("a", depth=3)}
    assert {"/home/user/a/b", "/home/user/a/b/c", "/home/user/a/b/f.txt"} <= names
    assert {e.name for e in sbx.files.list()} >= {"a"}
    moved = sbx.files.rename("a/b/f.txt", "a/g.txt")
    assert moved.path == "/home/user/a/g.txt"
    assert not sbx.files.exists("a/b/f.txt")
    sbx.files.remove("a")
    assert not sbx.files.exists("a/g.txt")
    with pytest.raises(SandboxError):
        sbx.files.read("../../../../etc/passwd")


def test_files_write_type_errors(sbx):
    with pytest.raises(ValueError):
        sbx.files.write("x", None)
    with pytest.raises(TypeError):
        sbx.files.write("x", 12)
    with pytest.raises(ValueError):
        sbx.files.read("x", format="json")


def test_upload_download(sbx, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00payload\xff" * 1000)
    sbx.files.upload(str(src), "up/src.bin")
    dst = tmp_path / "deep" / "dst.bin"
    assert sbx.files.download("up/src.bin", str(dst)) == str(dst)
    assert dst.read_bytes() == src.read_bytes()


def test_watch_dir(sbx):
    sbx.files.make_dir("w")
    events: list[FilesystemEvent] = []
    got = threading.Event()

    def cb(ev):
        events.append(ev)
        if any(e.name == "new.txt" for e in events):
            got.set()

    h = sbx.files.watch_dir("w", cb)
    try:
        sbx.files.write("w/new.txt", "x")
        assert got.wait(15), events
    finally:
        h.stop()
    ev = [e for e in events if e.name == "new.txt"][0]
    assert ev.path == "/home/user/w/new.txt" and ev.op in ("create", "write") and ev.type == ev.op
    assert not h.running and h.error is None
    n = len(events)
    sbx.files.write("w/after.txt", "x")
    time.sleep(0.5)
    assert len(events) == n


# -- commands ------------------------------------------------------------------------------


def test_commands_run(sbx):
    r = sbx.commands.run("echo out; echo err >&2; exit 3")
    assert isinstance(r, CommandResult)
    assert (r.exit_code, r.stdout, r.stderr, r.error) == (3, "out\n", "err\n", None)
    assert not r.success
    sbx.files.make_dir("sub")
    r = sbx.commands.run("basename $PWD; echo $V", envs={"V": "v1"}, cwd="sub")
    assert r.stdout == "sub\nv1\n" and r.exit_code == 0 and r.success
    chunks = []
    r = sbx.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=chunks.append)
    assert "".join(chunks) == "1\n2\n3\n" == r.stdout


def test_commands_timeout(sbx):
    t = time.monotonic()
    r = sbx.commands.run("sleep 30", timeout=1)
    assert time.monotonic() - t < 20
    assert r.exit_code == -1 and r.error and "timed out" in r.error


def test_commands_background_and_kill(sbx):
    h = sbx.commands.run("echo started; touch bg-started; sleep 60", background=True)
    assert isinstance(h, CommandHandle) and h.pid > 0
    assert h.pid in [p.pid for p in sbx.commands.list()]
    # Kill only once the command has printed (a loaded machine may not have
    # run the echo yet).
    deadline = time.monotonic() + 30
    while not sbx.files.exists("bg-started"):
        assert time.monotonic() < deadline, "the background command never started"
        time.sleep(0.05)
    assert h.kill() is True
    r = h.wait(timeout=20)
    assert r.exit_code == -1 and r.stdout == "started\n"
    assert h.pid not in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(h.pid) is False


def test_commands_background_stdin_and_connect(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True, tag="cat")
    info = [p for p in sbx.commands.list() if p.pid == h.pid][0]
    assert info.cmd == "cat" and info.tag == "cat"
    h.send_stdin("hello ")
    sbx.commands.send_stdin(h.pid, b"world")
    h2 = sbx.commands.connect(h.pid)
    h.close_stdin()
    r = h2.wait(timeout=20)
    assert r.exit_code == 0 and r.stdout == "hello world"


def test_commands_background_callbacks(sbx):
    lines = []
    h = sbx.commands.run("for i in 1 2; do echo $i; sleep 0.2; done", background=True, on_stdout=lines.append)
    r = h.wait(timeout=20)
    assert r.stdout == "1\n2\n" and "".join(lines) == "1\n2\n"


# -- the server -----------------------------------------------------------------------------


def test_private_server_is_shared(sbx):
    url = ds_sandbox.private_server_url()
    assert url and url.startswith("http://127.0.0.1:")
    assert sbx.server_url == url


def _run_py(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    client_root = os.path.dirname(os.path.dirname(os.path.abspath(ds_sandbox.__file__)))
    env = {**os.environ, **env}
    env["PYTHONPATH"] = client_root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def test_missing_binary_is_a_clear_error(tmp_path):
    p = _run_py("from ds_sandbox import Sandbox, ServerStartError\n"
                "try:\n    Sandbox.create()\nexcept ServerStartError as e:\n    print('ERR', e)\n",
                {"DS_SANDBOX_BIN": "", "PATH": str(tmp_path), "DS_SANDBOX_URL": ""})
    assert p.returncode == 0, p.stderr
    assert "ERR" in p.stdout and "DS_SANDBOX_BIN" in p.stdout and "DS_SANDBOX_URL" in p.stdout


def test_concurrent_first_use_starts_one_server(tmp_path):
    code = (
        "import threading, ds_sandbox\nfrom ds_sandbox import Sandbox\n"
        "urls = []\n"
        "def go():\n    s = Sandbox.create(); urls.append(s.server_url); s.run_code('1'); s.kill()\n"
        "ts = [threading.Thread(target=go) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(len(urls), len(set(urls)))\n")
    p = _run_py(code, {"SANDBOX_STATE_DIR": str(tmp_path / "state")})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["4", "1"]


def test_server_stopped_at_exit_even_with_live_sandboxes(tmp_path):
    code = ("import ds_sandbox, ds_sandbox._server as srv\nfrom ds_sandbox import Sandbox\n"
            "s = Sandbox.create(); s.run_code('x = 1')\n"
            "print(srv._server.proc.pid, s.get_info().workspace_path)\n")
    t = time.monotonic()
    p = _run_py(code, {"SANDBOX_STATE_DIR": str(tmp_path / "state")})
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t < 60
    pid, ws = p.stdout.split()
    assert not os.path.exists(f"/proc/{pid}")
    # the sandbox it did not kill was killed: its anonymous workspace is gone and
    # no process (agent, kernel) is left working in the state directory
    assert not os.path.exists(ws)
    assert processes_mentioning(str(tmp_path)) == []


def test_explicit_endpoint_and_api_keys(tmp_path):
    """A daemon with API keys, named by SandboxConfig(api_endpoint, api_key) and by
    DS_SANDBOX_URL / DS_SANDBOX_API_KEY."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "state_dir": str(tmp_path / "state"),
        "api_keys": [{"id": "alice", "key": "alice-key-0123456789", "admin": True},
                     {"id": "bob", "key": "bob-key-0123456789"}],
    }))
    proc = subprocess.Popen([os.environ["DS_SANDBOX_BIN"], "serve", "--listen", "127.0.0.1:0", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.match(r"ds-sandbox: listening on (\S+)", line)
        assert m, line + proc.stderr.read()
        url = m.group(1)
        alice = SandboxConfig(api_endpoint=url, api_key="alice-key-0123456789")
        bob = SandboxConfig(api_endpoint=url, api_key="bob-key-0123456789")
        with pytest.raises(PermissionDeniedError):
            Sandbox.create(config=SandboxConfig(api_endpoint=url))
        with pytest.raises(PermissionDeniedError):
            Sandbox.list(config=SandboxConfig(api_endpoint=url, api_key="wrong"))
        with Sandbox.create(config=alice) as s:
            assert s.server_url == url
            assert s.run_code("6 * 7").text == "42"
            with pytest.raises(NotFoundError):
                Sandbox.connect(s.sandbox_id, config=bob)
            assert s.sandbox_id not in [i.sandbox_id for i in Sandbox.list(config=bob)]
            p = _run_py("from ds_sandbox import Sandbox\nimport sys\n"
                        f"print(Sandbox.connect({s.sandbox_id!r}).run_code('7 * 6').text)\n",
                        {"DS_SANDBOX_URL": url, "DS_SANDBOX_API_KEY": "alice-key-0123456789",
                         "DS_SANDBOX_BIN": "/nonexistent"})
            assert p.returncode == 0, p.stderr
            assert p.stdout.strip() == "42"
        with pytest.raises(PermissionDeniedError):
            bob.save_template(Template(id="x"))  # templates need an admin key
    finally:
        proc.terminate()
        proc.wait(30)


def test_code_scanner_findings():
    # The server's default mode is warn: findings are attached and the cell runs.
    with Sandbox.create() as sbx:
        assert sbx.get_info().scanner_mode == "warn"
        e = sbx.run_code("import subprocess\nprint('ran')")
        assert e.error is None and "".join(e.logs.stdout) == "ran\n"
        assert [(f.type, f.severity, f.line, f.module) for f in e.findings] == [("subprocess", "high", 1, "subprocess")]
        assert isinstance(e.findings[0], ds_sandbox.Finding) and e.findings[0].message
        assert sbx.run_code("1 + 1").findings == []
        # One cell can be made stricter, not looser.
        e = sbx.run_code("open('outputs/one.txt', 'w').write('x')", scanner_mode="block")
        assert e.error is not None and e.error.name == "SecurityScanFailedError"
        assert not sbx.files.exists("outputs/one.txt")
        with pytest.raises(PermissionDeniedError):
            sbx.run_code("1", scanner_mode="off")
    # block: a critical finding means the cell does not run.
    with Sandbox.create(scanner_mode="block") as sbx:
        errors = []
        e = sbx.run_code("x = 1\nexec('y = 2')", on_error=errors.append)
        assert e.error.name == "SecurityScanFailedError" and "line 2" in e.error.value and errors == [e.error]
        assert [(f.type, f.severity, f.function) for f in e.findings] == [("dynamic_exec", "critical", "exec")]
        assert e.execution_count is None and e.logs.stdout == []
        assert sbx.run_code("'x' in globals()").text == "False"
    with Sandbox.create(template=Template(id="strict", scanner_mode="block")) as sbx:
        assert sbx.get_info().scanner_mode == "block"


# -- objects, without a server ------------------------------------------------------------


def test_execution_from_wire():
    e = Execution._from_wire({
        "results": [{"text": "1", "is_main_result": True}, {"png": base64.b64encode(b"png").decode()}],
        "logs": {"stdout": ["a"], "stderr": []},
        "error": {"name": "E", "value": "v", "traceback": "tb"},
        "execution_count": 3,
        "findings": [{"type": "system", "severity": "high", "line": 2, "function": "system", "message": "m"}]})
    assert e.findings == [ds_sandbox.Finding("system", "high", 2, "m", function="system")]
    assert e.text == "1" and e.results[1].png_bytes() == b"png"
    assert e.logs.stdout == ["a"] and e.error.name == "E" and e.execution_count == 3
    assert repr(e.results[1]) == "Result(Formats: ['png'])"
    assert "Execution(Results:" in repr(e)


def test_config_fields():
    c = SandboxConfig()
    assert c.default_user == "user" and c.default_workdir == "/home/user"
    assert c.default_timeout_sec == 3600 and c.allow_internet is True
    assert c.default_network_policy == "allow" and c.network_whitelist == []
    assert c.templates_dir == "/etc/ds-sandbox/templates"
    assert c._network() is None
    assert SandboxConfig(allow_internet=False)._network() == {"policy": "deny"}
    assert SandboxConfig(network_whitelist=["a.com"])._network() == {"policy": "whitelist", "whitelist": ["a.com"]}
    assert SandboxConfig(default_network_policy="allow", network_whitelist=["a.com"])._network() == {"policy": "allow"}
    assert SandboxConfig(allow_internet=False, network_whitelist=["a.com"])._network() == {"policy": "deny"}
    with pytest.raises(TypeError):
        SandboxConfig(no_such_field=1)
    with pytest.raises(ValueError):
        SandboxConfig(default_network_policy="maybe")


def test_config_from_env(monkeypatch):
    monkeypatch.setenv("SANDBOX_ALLOW_INTERNET", "false")
    monkeypatch.setenv("SANDBOX_NETWORK_WHITELIST", "api.github.com, pypi.org")
    monkeypatch.setenv("SANDBOX_TIMEOUT", "12")
    monkeypatch.setenv("SANDBOX_DEFAULT_USER", "bob")
    c = SandboxConfig.from_env()
    assert c.allow_internet is False and c.network_whitelist == ["api.github.com", "pypi.org"]
    assert c.default_timeout_sec == 12 and c.default_user == "bob"
    assert c.is_set("default_user") and not c.is_set("default_workdir")


def test_kill_during_execution_is_reported():
    s = Sandbox.create()
    got: list = []

    def run():
        try:
            got.append(s.run_code("import time\nprint('go', flush=True)\ntime.sleep(60)"))
        except BaseException as e:  # noqa: BLE001
            got.append(e)

    t = threading.Thread(target=run)
    started = time.monotonic()
    t.start()
    time.sleep(2)
    assert s.kill()
    t.join(30)
    assert not t.is_alive()
    assert time.monotonic() - started < 30
    r = got[0]
    # either the call failed with the reason, or the cell ended with an error
    if isinstance(r, Execution):
        assert r.error is not None, r
    else:
        assert isinstance(r, ds_sandbox.UnavailableError) or isinstance(r, NotFoundError), repr(r)


def test_datasets():
    assert isinstance(ds_sandbox.list_datasets(), list)
    assert ds_sandbox.list_datasets(name_contains="no-such-dataset-xyz") == []
    with Sandbox.create() as s:
        with pytest.raises(NotFoundError):
            s.prepare_dataset("no-such-dataset-xyz")


def test_register_dataset(tmp_path):
    data = b"region,amount\nnorth,10\nsouth,32\n"
    src = tmp_path / "sales.csv"
    src.write_bytes(data)
    name = "py-sales-" + uuid.uuid4().hex[:8]
    d = ds_sandbox.register_dataset(src, name, description="quarterly sales", tags=["finance", "q3"])
    assert (d.name, d.format, d.size, d.sha256) == (name, "csv", len(data), hashlib.sha256(data).hexdigest())
    assert (d.description, d.tags) == ("quarterly sales", ["finance", "q3"])
    assert [x.name for x in ds_sandbox.list_datasets(name_contains=name, tag="q3")] == [name]
    with pytest.raises(ds_sandbox.AlreadyExistsError):
        ds_sandbox.register_dataset(str(src), name)
    with Sandbox.create() as s:
        p = s.prepare_dataset(name)
        assert s.run_code(f"import pandas as pd; int(pd.read_csv({p!r})['amount'].sum())").text == "42"

    # A file object is streamed too; its name gives the format.
    with open(src, "rb") as f:
        d2 = ds_sandbox.register_dataset(f, name + "-f")
    assert (d2.format, d2.sha256) == ("csv", d.sha256)
    with pytest.raises(ds_sandbox.UnsupportedError):
        ds_sandbox.register_dataset(tmp_path, name + "-dir")
    with pytest.raises(ds_sandbox.InvalidArgumentError):
        ds_sandbox.register_dataset(src, "Not A Valid Name!")

    ds_sandbox.remove_dataset(name)
    ds_sandbox.remove_dataset(name + "-f")
    assert ds_sandbox.list_datasets(name_contains=name) == []
    with pytest.raises(NotFoundError):
        ds_sandbox.remove_dataset(name)


def test_busy_daemon_is_retried(tmp_path):
    """A daemon whose start queue is full answers 429 with Retry-After; the
    client waits and sends the create again, so every caller gets its
    sandbox (four creates at once against one start slot and no queue)."""
    import socket
    from ds_sandbox._transport import Transport

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "busy.yaml"
    cfg.write_text("default_backend: local\nmax_concurrent_starts: 1\nstart_queue_max: 0\n")
    env = {**os.environ, "SANDBOX_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([os.environ["DS_SANDBOX_BIN"], "serve", "--ephemeral", "--config", str(cfg),
                             "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t = Transport(f"http://127.0.0.1:{port}")
        for _ in range(600):
            try:
                t.call("GET", "/healthz")
                break
            except ds_sandbox.SandboxError:
                time.sleep(0.1)
        results, errors = [], []

        def create():
            try:
                results.append(t.call("POST", "/v1/sandboxes", json_body={}))
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=create) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        assert len({r["sandbox_id"] for r in results}) == 4
        metrics = t.open("GET", "/metrics", accept="text/plain").read().decode()
        refused = [ln for ln in metrics.splitlines() if ln.startswith("dssandbox_starts_refused_total")]
        assert refused and float(refused[0].split()[-1]) > 0, refused
    finally:
        proc.terminate()
        proc.wait(30)
