//go:build linux

package jupyter

import (
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// fakeKernel is an ipykernel_launcher.py that speaks just enough of the
// protocol to script the cases a real kernel rarely produces.
const fakeKernel = `
import datetime, hashlib, hmac, json, sys, time, uuid, zmq
ci = json.load(open(sys.argv[sys.argv.index("-f") + 1]))
key = ci["key"].encode()
ctx = zmq.Context()
def bind(name, typ):
    s = ctx.socket(typ)
    s.bind("ipc://%s-%d" % (ci["ip"], ci[name + "_port"]))
    return s
shell, iopub = bind("shell", zmq.ROUTER), bind("iopub", zmq.PUB)
control, stdin = bind("control", zmq.ROUTER), bind("stdin", zmq.ROUTER)
def send(sock, idents, msg_type, content, parent, bad=False):
    hdr = {"msg_id": uuid.uuid4().hex, "session": "fake", "username": "fake", "msg_type": msg_type,
           "date": datetime.datetime.utcnow().isoformat() + "Z", "version": "5.3"}
    parts = [json.dumps(x).encode() for x in (hdr, parent, {}, content)]
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        mac.update(p)
    sig = b"0" * 64 if bad else mac.hexdigest().encode()
    sock.send_multipart(idents + [b"<IDS|MSG>", sig] + parts)
def pub(msg_type, content, parent, bad=False):
    send(iopub, [b"kernel.fake." + msg_type.encode()], msg_type, content, parent, bad)
while True:
    frames = shell.recv_multipart()
    i = frames.index(b"<IDS|MSG>")
    idents, hdr, content = frames[:i], json.loads(frames[i + 2]), json.loads(frames[i + 5])
    pub("status", {"execution_state": "busy"}, hdr)
    if hdr["msg_type"] == "kernel_info_request":
        pub("iopub_welcome", {}, {})
        send(shell, idents, "kernel_info_reply", {"status": "ok", "protocol_version": "5.3"}, hdr)
        pub("status", {"execution_state": "idle"}, hdr)
        continue
    code, reply = content["code"], {"status": "ok", "execution_count": 7}
    if code == "idle first":
        pub("stream", {"name": "stdout", "text": "a"}, hdr)
        pub("status", {"execution_state": "idle"}, hdr)
        time.sleep(0.1)
        send(shell, idents, "execute_reply", reply, hdr)
        continue
    if code == "noise":
        pub("stream", {"name": "stdout", "text": "forged"}, hdr, bad=True)
        pub("stream", {"name": "stdout", "text": "another cell"}, {"msg_id": "someone-else"})
        pub("comm_open", {"comm_id": "c"}, hdr)
        pub("stream", {"name": "stdout", "text": "good"}, hdr)
    if code == "aborted":
        reply = {"status": "aborted"}
    send(shell, idents, "execute_reply", reply, hdr)
    pub("status", {"execution_state": "idle"}, hdr)
`

// TestProtocolEdgeCases runs a scripted fake kernel: the idle may come before
// the reply, bad signatures, other requests' messages and unknown message
// types are dropped, and "aborted" is a reply, not an error.
func TestProtocolEdgeCases(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t) // the fake uses the system pyzmq
	k := startKernel(t, Config{Env: fakeLauncher(t, fakeKernel)})

	tests := []struct {
		name, code, wantStatus, wantStdout string
	}{
		{"idle before reply", "idle first", "ok", "a"},
		{"forged, foreign and unknown messages dropped", "noise", "ok", "good"},
		{"aborted", "aborted", "aborted", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs, r := run(t, k, ExecuteRequest{Code: tt.code})
			if r.Status != tt.wantStatus {
				t.Errorf("status = %q, want %q", r.Status, tt.wantStatus)
			}
			if got := streams(outs, "stdout"); got != tt.wantStdout || len(outs) != len(ofType(outs, "stream")) {
				t.Errorf("outputs = %+v, want stdout %q only", outs, tt.wantStdout)
			}
		})
	}
}
