package agent

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func TestHandoff(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := listenHandoffs(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 4)
	go serveHandoffs(ln, func(ctxID string, f *os.File) error {
		defer f.Close()
		if ctxID == "taken" {
			return api.Errorf(api.ErrExists, "context %s already has an engine", ctxID)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		got <- ctxID + ":" + string(b)
		return nil
	})
	if st, err := os.Stat(HandoffSocket(sock)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("hand-off socket: %v %v", st, err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString("through the descriptor")
	w.Close()
	if err := HandEngine(t.Context(), sock, "default", r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if s := <-got; s != "default:through the descriptor" {
		t.Fatalf("the agent read %q", s)
	}

	r2, w2, _ := os.Pipe()
	defer w2.Close()
	err = HandEngine(t.Context(), sock, "taken", r2)
	r2.Close()
	if !errors.Is(err, api.ErrExists) || !strings.Contains(err.Error(), "already has an engine") {
		t.Fatalf("refused hand-off: %v", err)
	}

	// Malformed hand-offs get an error and leave nothing open in the agent.
	send := func(hdr []byte, fds ...int) handoffReply {
		t.Helper()
		c, err := net.Dial("unix", HandoffSocket(sock))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if _, _, err := c.(*net.UnixConn).WriteMsgUnix(hdr, oob, nil); err != nil {
			t.Fatal(err)
		}
		var rep handoffReply
		if err := json.NewDecoder(c).Decode(&rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	r3, w3, _ := os.Pipe()
	defer r3.Close()
	defer w3.Close()
	before := openFDs(t)
	for _, tc := range []struct {
		hdr  string
		fds  []int
		want string
	}{
		{`{"context":"default"}`, nil, "exactly one descriptor"},
		{`{"context":"default"}`, []int{int(r3.Fd()), int(w3.Fd())}, "exactly one descriptor"},
		{`{"context":`, []int{int(r3.Fd())}, "hand-off header"},
		{`{}`, []int{int(r3.Fd())}, "names no context"},
		{strings.Repeat("x", maxHandoffHeader+10), []int{int(r3.Fd())}, "truncated"},
	} {
		rep := send([]byte(tc.hdr), tc.fds...)
		if rep.Code != api.CodeInvalid || !strings.Contains(rep.Error, tc.want) {
			t.Errorf("hand-off %.30q with %d fds: %+v, want invalid %q", tc.hdr, len(tc.fds), rep, tc.want)
		}
	}
	// The agent closes its end of each connection after answering.
	after := openFDs(t)
	for deadline := time.Now().Add(10 * time.Second); after > before && time.Now().Before(deadline); after = openFDs(t) {
		time.Sleep(10 * time.Millisecond)
	}
	if after > before {
		t.Errorf("%d descriptors open after the refused hand-offs, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}
