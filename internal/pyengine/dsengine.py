# dsengine: the Python side of ds-sandbox's lean engine (Go package
# internal/pyengine, whose doc comment describes the protocol).
#
# Run as `python3 -c <this file> MODE ...` with a connected unix stream socket
# on fd 3:
#   engine           one engine: serve cells on fd 3 (a cold start)
#   zygote JSON      import the modules listed in JSON, gc.freeze(), then fork
#                    engines on request; each request carries the new
#                    engine's socket (SCM_RIGHTS)
#
# Frames in both directions: a 4-byte big-endian length, then that many bytes
# of JSON (an object with a "t" field naming its type).
import base64
import builtins
import codecs
import ctypes
import gc
import importlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import threading

# The runner binds what it uses at import: a cell may monkey-patch json or
# struct without breaking the engine.
_dumps, _loads = json.dumps, json.loads
_pack, _unpack = struct.pack, struct.unpack
_b64encode, _b64decode = base64.b64encode, base64.b64decode

SOCK_FD = 3
MAX_IN_FRAME = 1 << 30  # what Go sends: code, env; bounded by Go too
STREAM_CHUNK = 1 << 18  # characters: at most 1 MiB of UTF-8 per stream frame
FLUSH_INTERVAL = 0.05


class _State:
    sock = None
    main_ident = None
    in_cell = False
    critical = 0
    pending = False
    seq = 0
    input_n = 0
    last_error = None
    shell = None


S = _State()
_send_lock = threading.Lock()
_out_lock = threading.RLock()
_streams = []  # [name, text] pieces not yet sent, in order
_stream_chars = 0


def _json_default(o):
    if isinstance(o, (bytes, bytearray, memoryview)):
        return _b64encode(bytes(o)).decode("ascii")
    return repr(o)


def _finite(o):
    if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _encode(obj):
    try:
        body = _dumps(obj, ensure_ascii=False, default=_json_default, allow_nan=False)
    except ValueError:  # NaN or infinity somewhere: JSON has no such numbers
        body = _dumps(_finite(obj), ensure_ascii=False, default=_json_default, allow_nan=False)
    body = body.encode("utf-8", "replace")
    return _pack(">I", len(body)) + body


class _Critical:
    """Defers a SIGINT that arrives on the main thread while a frame is being
    read or written, so that the byte stream to Go is never cut mid-frame."""

    def __enter__(self):
        if threading.get_ident() == S.main_ident:
            S.critical += 1

    def __exit__(self, *exc):
        if threading.get_ident() == S.main_ident:
            S.critical -= 1
            if S.critical == 0 and S.pending and S.in_cell and exc[0] is None:
                S.pending = False
                raise KeyboardInterrupt
        return False


_critical = _Critical()


def _send(obj, fds=None):
    data = _encode(obj)
    if S.sock is None:
        raise OSError("no connection (a process forked by the cell)")
    with _critical, _send_lock:
        if fds:
            socket.send_fds(S.sock, [data], fds)
        else:
            S.sock.sendall(data)


def _recv_exact(n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = S.sock.recv_into(view[got:])
        if k == 0:
            raise EOFError
        got += k
    return bytes(buf)


def _recv():
    """Reads one frame. While a cell runs, a SIGINT interrupts the wait for
    the frame but never its reading."""
    if S.in_cell:
        select.select([S.sock], [], [])
    with _critical:
        (n,) = _unpack(">I", _recv_exact(4))
        if n > MAX_IN_FRAME:
            raise ValueError("frame of %d bytes is over the limit" % n)
        return _loads(_recv_exact(n))


def _sigint(signum, frame):
    if not S.in_cell:
        return  # idle: nothing to interrupt
    if S.critical:
        S.pending = True
        return
    raise KeyboardInterrupt


# ---- output ------------------------------------------------------------

def _flush_streams():
    global _stream_chars
    with _out_lock:
        pieces, _streams[:] = list(_streams), []
        _stream_chars = 0
        merged = []
        for name, text in pieces:
            if merged and merged[-1][0] == name:
                merged[-1][1].append(text)
            else:
                merged.append((name, [text]))
        for name, parts in merged:
            text = "".join(parts)
            for i in range(0, len(text), STREAM_CHUNK):
                _send({"t": "out", "seq": S.seq, "type": "stream", "name": name,
                       "text": text[i:i + STREAM_CHUNK]})


def _append_stream(name, text):
    global _stream_chars
    if not text:
        return
    with _out_lock:
        _streams.append((name, text))
        _stream_chars += len(text)
        if _stream_chars >= STREAM_CHUNK:
            _flush_streams()


def _emit(msg):
    """Sends one output after the stream text written before it."""
    msg["t"] = "out"
    msg["seq"] = S.seq
    with _out_lock:
        _flush_streams()
        _send(msg)


class _Stream:
    """sys.stdout / sys.stderr: text goes to Go as stream frames."""

    encoding = "utf-8"
    errors = "replace"
    closed = False
    line_buffering = False

    def __init__(self, name, fd):
        self.name = name
        self._fd = fd

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        _append_stream(self.name, s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        _flush_streams()

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False


class _FdReader:
    """Reads fds 1 and 2 (pipes) so that output of subprocesses and C code
    reaches Go as stream text. drain() returns once everything written to the
    pipes before it was called has been read."""

    def __init__(self):
        self.pipes = {}
        self.dec = {}
        for fd, name in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self.pipes[r] = name
            self.dec[r] = codecs.getincrementaldecoder("utf-8")("replace")
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.drained = threading.Event()
        self.lock = threading.Lock()

    def _read(self, fd, limit):
        got = 0
        while got < limit:
            try:
                b = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not b:
                return
            got += len(b)
            _append_stream(self.pipes[fd], self.dec[fd].decode(b))

    def run(self):
        fds = list(self.pipes) + [self.wake_r]
        while True:
            r, _, _ = select.select(fds, [], [])
            for fd in r:
                if fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 512)
                    except BlockingIOError:
                        pass
                    for p in self.pipes:
                        self._read(p, 16 << 20)
                    self.drained.set()
                else:
                    self._read(fd, 1 << 20)

    def drain(self):
        with self.lock:
            self.drained.clear()
            os.write(self.wake_w, b"x")
            self.drained.wait(2.0)


def _flusher():
    ev = threading.Event()
    while True:
        ev.wait(FLUSH_INTERVAL)
        try:
            _flush_streams()
        except OSError:
            os._exit(0)  # Go is gone


# ---- the shell -----------------------------------------------------------

def make_shell():
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type
    from traitlets.config import Config

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None,
                    update=False, **kwargs):
            msg = {"type": "update_display_data" if update else "display_data",
                   "data": data, "metadata": metadata or {}}
            if transient:
                msg["transient"] = transient
            _emit(msg)

        def clear_output(self, wait=False):
            _emit({"type": "clear_output", "wait": bool(wait)})

    class Hook(DisplayHook):
        def start_displayhook(self):
            self._msg = {"type": "execute_result", "data": {}, "metadata": {}}

        def write_output_prompt(self):
            self._msg["execution_count"] = self.prompt_count

        def write_format_data(self, format_dict, md_dict=None):
            self._msg["data"] = format_dict
            self._msg["metadata"] = md_dict or {}

        def finish_displayhook(self):
            msg, self._msg = self._msg, None
            if msg and msg["data"]:
                _emit(msg)

    class Shell(InteractiveShell):
        displayhook_class = Type(Hook)
        display_pub_class = Type(Publisher)

        def _showtraceback(self, etype, evalue, stb):
            err = {"type": "error",
                   "ename": getattr(etype, "__name__", str(etype)),
                   "evalue": str(evalue), "traceback": list(stb)}
            S.last_error = err
            _emit(dict(err))

        def init_io(self):
            pass  # sys.stdout/stderr are ours

        def enable_gui(self, gui=None):
            pass

    c = Config()
    c.HistoryManager.hist_file = ":memory:"  # no sqlite file, no saving thread
    c.InteractiveShell.colors = "NoColor"
    c.InteractiveShell.xmode = "Context"
    shell = Shell.instance(config=c)
    shell.history_manager.db_log_output = False
    S.shell = shell
    return shell


def _no_input(prompt="", *args, **kwargs):
    from IPython.core.error import StdinNotImplementedError
    raise StdinNotImplementedError(
        "raw_input was called, but this frontend does not support input requests.")


def _request_input(prompt, password):
    _flush_streams()
    S.input_n += 1
    n = S.input_n
    _send({"t": "input_request", "seq": S.seq, "n": n, "prompt": str(prompt),
           "password": bool(password)})
    while True:
        msg = _recv()
        if msg.get("t") == "input_reply" and msg.get("seq") == S.seq and msg.get("n") == n:
            return str(msg.get("value", ""))


def _input(prompt=""):
    return _request_input(prompt, False)


def _getpass(prompt="Password: ", stream=None):
    return _request_input(prompt, True)


def _execute(req):
    import getpass
    S.seq = req.get("seq", 0)
    S.last_error = None
    if req.get("allow_stdin"):
        builtins.input, getpass.getpass = _input, _getpass
    else:
        builtins.input, getpass.getpass = _no_input, _no_input
    shell = S.shell
    ok = True
    S.pending = False
    S.in_cell = True
    try:
        res = shell.run_cell(req.get("code", ""), store_history=bool(req.get("store_history")),
                             silent=bool(req.get("silent")))
        ok = res.success
    except KeyboardInterrupt:
        ok = False
        if S.last_error is None:
            S.last_error = {"type": "error", "ename": "KeyboardInterrupt", "evalue": "",
                            "traceback": ["KeyboardInterrupt"]}
            _emit(dict(S.last_error))
    finally:
        S.in_cell = False
        S.pending = False
    _finish_outputs()
    reply = {"t": "reply", "seq": S.seq, "status": "ok",
             "execution_count": shell.execution_count - 1}
    if not ok:
        err = S.last_error or {"ename": "UnknownError", "evalue": "", "traceback": []}
        reply.update(status="error", ename=err["ename"], evalue=err["evalue"],
                     traceback=err["traceback"])
    _send(reply)


_libc_self = None


def _finish_outputs():
    """Sends everything the cell wrote: C stdio buffers, the fd 1/2 pipes,
    then our stream buffers."""
    global _libc_self
    try:
        if _libc_self is None:
            _libc_self = ctypes.CDLL(None)
        _libc_self.fflush(None)
    except Exception:
        pass
    if S.fdreader is not None:
        S.fdreader.drain()
    _flush_streams()


S.fdreader = None


def _after_fork_in_child():
    """A process forked by a cell (os.fork) must not speak on the engine's
    socket: it would steal Go's frames or interleave its own. Its output goes
    to the fds 1 and 2 pipes, which the engine reads."""
    try:
        if S.sock is not None:
            os.close(S.sock.detach())
    except OSError:
        pass
    S.sock = None
    S.fdreader = None
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False, errors="replace")
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False, errors="replace")


def serve(fd):
    """Serves one engine on the socket fd until Go closes it. Never returns."""
    try:
        S.sock = socket.socket(fileno=fd)
        S.sock.setblocking(True)
        S.main_ident = threading.get_ident()
        if S.shell is None:
            make_shell()
        pidfd = os.pidfd_open(os.getpid())
        _send({"t": "hello", "pid": os.getpid()}, fds=[pidfd])
        os.close(pidfd)
        signal.signal(signal.SIGINT, _sigint)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        S.fdreader = _FdReader()
        sys.stdout = _Stream("stdout", 1)
        sys.stderr = _Stream("stderr", 2)
        sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
        os.register_at_fork(after_in_child=_after_fork_in_child)
        threading.Thread(target=S.fdreader.run, name="dsengine-fds", daemon=True).start()
        threading.Thread(target=_flusher, name="dsengine-flush", daemon=True).start()
        while True:
            try:
                msg = _recv()
            except KeyboardInterrupt:
                continue
            if msg.get("t") == "execute":
                _execute(msg)
    except (EOFError, OSError):
        pass
    except BaseException as e:  # a bug of ours: say so where Go can see it
        try:
            _send({"t": "fatal", "error": "%s: %s" % (type(e).__name__, e)})
        except BaseException:
            pass
    os._exit(0)


# ---- zygote --------------------------------------------------------------

_CLONE = {"user": 0x10000000, "cgroup": 0x02000000, "ipc": 0x08000000,
          "uts": 0x04000000, "net": 0x40000000, "pid": 0x20000000, "mnt": 0x00020000}
_NS_ORDER = ["user", "cgroup", "ipc", "uts", "net", "pid", "mnt"]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


# keyctl's number per machine (os.uname().machine).
_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 280, "s390x": 280}


def _enter_early(enter, nsfds):
    """In the zygote's child, still root: cgroup, then namespaces (nsenter's
    order). Joining a pid namespace applies to the children, hence the second
    fork that follows then."""
    libc = _libc()
    # The rlimits first, as host root: raising a hard limit needs
    # CAP_SYS_RESOURCE in the host's user namespace.
    import resource
    for rl in enter.get("rlimits") or []:
        resource.setrlimit(rl["resource"], (rl["cur"], rl["max"]))
    procs = enter.get("cgroup_procs") or []
    if isinstance(procs, str):
        procs = [procs]
    for path in procs:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    for ns in _NS_ORDER:
        if ns in nsfds:
            _check(libc.setns(nsfds[ns], _CLONE[ns]), "setns %s" % ns)
            os.close(nsfds.pop(ns))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _enter_late(enter):
    """In the engine, still root: credentials, capabilities, rlimits,
    no_new_privs, seccomp. The bounding set is dropped before the uid
    changes, because dropping it needs CAP_SETPCAP."""
    libc = _libc()
    # While still root: a session keyring of the engine's own (not the
    # daemon's) and runc's umask.
    nr = _KEYCTL.get(os.uname().machine)
    if nr is None:
        raise OSError("no keyctl syscall number known for %s" % os.uname().machine)
    if libc.syscall(nr, 1, None) < 0:  # keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)
        e = ctypes.get_errno()
        raise OSError(e, "join a new session keyring: %s" % os.strerror(e))
    os.umask(0o022)
    PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    for cap in range(last + 1):
        _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop capability %d from the bounding set" % cap)
    if enter.get("gid") is not None:
        os.setgroups([int(g) for g in enter.get("groups") or []])
        os.setresgid(enter["gid"], enter["gid"], enter["gid"])
    if enter.get("uid") is not None:
        os.setresuid(enter["uid"], enter["uid"], enter["uid"])
    hdr = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(hdr), data), "capset (drop every capability)")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    prog = enter.get("seccomp")
    if prog:
        raw = _b64decode(prog)
        if len(raw) % 8 or not raw:
            raise ValueError("seccomp program is %d bytes, not a multiple of 8" % len(raw))
        buf = ctypes.create_string_buffer(raw, len(raw))
        fprog = _SockFprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
        _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
               "load the seccomp filter")


def _engine_child(req, efd):
    """The engine: its own session, the restrictions,
    no inherited descriptors, fresh random state, its directory and
    environment; then threads and serving."""
    os.setsid()
    enter = req.get("enter")
    if req.get("dir"):
        os.chdir(req["dir"])
    if enter is not None:
        _enter_late(enter)
    os.closerange(SOCK_FD, efd)
    os.closerange(efd + 1, 1 << 20)
    if efd != SOCK_FD:
        os.dup2(efd, SOCK_FD, inheritable=False)
        os.close(efd)
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()
    os.environ.clear()
    os.environ.update(req.get("env") or {})
    serve(SOCK_FD)


def _fail_child(efd, what, e):
    try:
        if S.sock is not None and S.sock.fileno() == SOCK_FD:
            S.sock.detach()
        S.sock = socket.socket(fileno=efd)
        S.main_ident = threading.get_ident()
        _send({"t": "fatal", "error": "%s: %s: %s" % (what, type(e).__name__, e)})
    except BaseException:
        pass
    os._exit(1)


def _child(req, efd, nsfds):
    """The zygote's child: Enter's early steps; if it joined a pid namespace
    (which applies to children only), it forks once more and exits, and the
    grandchild is the engine; otherwise it is the engine itself."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.close(S.sock.detach())
        if req.get("enter") is not None:
            _enter_early(req["enter"], nsfds)
        if "pid" in (req.get("fds") or []):
            if os.fork():
                os._exit(0)
    except BaseException as e:
        _fail_child(efd, "enter", e)
    try:
        _engine_child(req, efd)
    except BaseException as e:
        _fail_child(efd, "start engine", e)
    os._exit(1)


def _recv_request(sock):
    """Reads one fork request: the frame and the descriptors sent with its
    first bytes."""
    msg, fds, _, _ = socket.recv_fds(sock, 65536, 16)
    if not msg:
        raise EOFError
    while len(msg) < 4:
        more = sock.recv(4 - len(msg))
        if not more:
            raise EOFError
        msg += more
    (n,) = _unpack(">I", msg[:4])
    body = bytearray(msg[4:])
    while len(body) < n:
        more = sock.recv(min(n - len(body), 1 << 20))
        if not more:
            raise EOFError
        body += more
    return _loads(bytes(body)), fds


def _reap_children(signum=None, frame=None):
    """Reaps the zygote's exited children: engines, and the first children
    of forks into a pid namespace."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _threads():
    return threading.active_count(), len(os.listdir("/proc/self/task"))


def zygote(preload):
    S.sock = socket.socket(fileno=SOCK_FD)
    S.main_ident = threading.get_ident()
    make_shell()
    n = _threads()
    if n != (1, 1):
        _send({"t": "fatal", "error": "the runner itself started threads (%d Python, %d tasks)" % n})
        os._exit(1)
    for mod in preload:
        try:
            importlib.import_module(mod)
        except BaseException as e:
            _send({"t": "fatal", "module": mod,
                   "error": "preload module %s failed to import: %s: %s" % (mod, type(e).__name__, e)})
            os._exit(1)
        n = _threads()
        if n != (1, 1):
            _send({"t": "fatal", "module": mod,
                   "error": "preload module %s started threads at import (%d Python threads, %d tasks); "
                            "a zygote must have exactly one thread to fork safely: remove it from the preload list"
                            % ((mod,) + n)})
            os._exit(1)
    # An engine forked into a pid namespace is an orphan of the first child,
    # which lives outside it: as a child subreaper the zygote adopts it and
    # _reap_children reaps it, instead of the host's init.
    _check(_libc().prctl(36, 1, 0, 0, 0), "become a child subreaper")  # PR_SET_CHILD_SUBREAPER
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, _reap_children)
    _send({"t": "ready", "pid": os.getpid()})
    while True:
        try:
            req, fds = _recv_request(S.sock)
        except (EOFError, OSError):
            os._exit(0)
        names = req.get("fds") or []
        if len(fds) != 1 + len(names):
            for fd in fds:
                os.close(fd)
            _send({"t": "forked", "error": "request names %d descriptors, got %d" % (1 + len(names), len(fds))})
            continue
        efd, nsfds = fds[0], dict(zip(names, fds[1:]))
        try:
            pid = os.fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            _send({"t": "forked", "error": "fork: %s" % e})
            continue
        if pid == 0:
            try:
                _child(req, efd, nsfds)
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        # The child (the engine, or the first of two forks into a pid
        # namespace) is reaped by _reap_children on SIGCHLD.
        _send({"t": "forked", "pid": pid})


def main(argv):
    if len(argv) >= 2 and argv[1] == "engine":
        serve(SOCK_FD)
    elif len(argv) >= 3 and argv[1] == "zygote":
        zygote(_loads(argv[2]))
    else:
        sys.stderr.write("usage: dsengine engine | zygote JSON-LIST\n")
        os._exit(2)


if __name__ == "__main__":
    main(sys.argv)
