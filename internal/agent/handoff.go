package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Engine hand-off: an engine forked outside the sandbox (from the daemon's
// zygote) and entered into it is given to the agent as a descriptor of its
// socket. The daemon connects to the hand-off socket beside the agent's own
// and sends one message: a JSON header (handoffHeader) with the descriptor
// attached (SCM_RIGHTS); the agent answers one JSON line (handoffReply) and
// closes. The socket is 0600 in the agent's socket directory, which the
// backends seal from the sandbox's code; the agent also refuses a peer that
// is a process of the sandbox (checkHandoffPeer).

// handoffSocketName is the hand-off socket's name beside the agent's socket.
const handoffSocketName = "engine.sock"

// maxHandoffHeader bounds the header.
const maxHandoffHeader = 4096

// handoffTimeout bounds one hand-off exchange.
const handoffTimeout = 30 * time.Second

type handoffHeader struct {
	// Context is the code context the engine serves ("default").
	Context string `json:"context"`
}

type handoffReply struct {
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// HandoffSocket is the path of the hand-off socket of the agent serving on
// agentSocket.
func HandoffSocket(agentSocket string) string {
	return filepath.Join(filepath.Dir(agentSocket), handoffSocketName)
}

// HandEngine gives the agent serving on agentSocket an engine for context
// ctxID: f is the agent's end of the engine's socket (it stays open here; the
// caller closes it). It returns once the agent took the engine, or its error.
func HandEngine(ctx context.Context, agentSocket, ctxID string, f *os.File) error {
	hdr, err := json.Marshal(handoffHeader{Context: ctxID})
	if err != nil {
		return err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", HandoffSocket(agentSocket))
	if err != nil {
		return api.Errorf(api.ErrUnavailable, "engine hand-off: %v", err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	deadline := time.Now().Add(handoffTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = uc.SetDeadline(deadline)
	if _, _, err := uc.WriteMsgUnix(hdr, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return api.Errorf(api.ErrUnavailable, "engine hand-off: send: %v", err)
	}
	var rep handoffReply
	if err := json.NewDecoder(uc).Decode(&rep); err != nil {
		return api.Errorf(api.ErrUnavailable, "engine hand-off: no answer from the agent: %v", err)
	}
	if rep.Error != "" {
		return &api.Error{Code: rep.Code, Message: "engine hand-off: " + rep.Error}
	}
	return nil
}

// serveHandoffs accepts hand-offs on ln until it is closed, giving each
// received descriptor to adopt (which owns it from then on, also on error).
func serveHandoffs(ln *net.UnixListener, adopt func(ctxID string, f *os.File) error) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(handoffTimeout))
			err := receiveHandoff(c, adopt)
			rep := handoffReply{}
			if err != nil {
				rep.Error, rep.Code = err.Error(), api.CodeOf(err)
			}
			_ = json.NewEncoder(c).Encode(rep)
		}()
	}
}

func receiveHandoff(c *net.UnixConn, adopt func(string, *os.File) error) error {
	if err := checkHandoffPeer(c); err != nil {
		return err
	}
	buf := make([]byte, maxHandoffHeader+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return api.Errorf(api.ErrInvalid, "read: %v", err)
	}
	var fds []int
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return api.Errorf(api.ErrInvalid, "control message: %v", err)
		}
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			fds = append(fds, got...)
		}
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		unix.CloseOnExec(fd)
		files[i] = os.NewFile(uintptr(fd), "engine")
	}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if n > maxHandoffHeader || flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
		closeAll()
		return api.Errorf(api.ErrInvalid, "hand-off message truncated (header at most %d bytes, one descriptor)", maxHandoffHeader)
	}
	if len(files) != 1 {
		closeAll()
		return api.Errorf(api.ErrInvalid, "a hand-off carries exactly one descriptor, not %d", len(files))
	}
	var h handoffHeader
	if err := json.Unmarshal(buf[:n], &h); err != nil {
		closeAll()
		return api.Errorf(api.ErrInvalid, "hand-off header: %v", err)
	}
	if h.Context == "" {
		closeAll()
		return api.Errorf(api.ErrInvalid, "hand-off header names no context")
	}
	return adopt(h.Context, files[0])
}

// listenHandoffs makes the hand-off socket beside socketPath.
func listenHandoffs(socketPath string) (*net.UnixListener, error) {
	p := HandoffSocket(socketPath)
	_ = os.Remove(p)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", p, err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: %w", p, err)
	}
	return ln, nil
}
