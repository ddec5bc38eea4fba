package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// runtimeCLI drives an OCI runtime binary through its command-line interface,
// the runtime's own interface (runc, crun and runsc share it).
type runtimeCLI struct {
	bin   string   // the runtime binary
	root  string   // its state directory (--root)
	flags []string // more global flags
	// wrap, when set, is a command line the runtime runs under (rootless:
	// unshare making the outer user namespace).
	wrap []string
}

// args is the runtime's command line (without wrap) of one runtime command.
func (r runtimeCLI) args(cmd ...string) []string {
	a := append([]string{"--root", r.root}, r.flags...)
	return append(a, cmd...)
}

// command is one runtime command, ready to run.
func (r runtimeCLI) command(ctx context.Context, args ...string) *exec.Cmd {
	if len(r.wrap) > 0 {
		argv := append(append(r.wrap[1:len(r.wrap):len(r.wrap)], r.bin), r.args(args...)...)
		return exec.CommandContext(ctx, r.wrap[0], argv...)
	}
	return exec.CommandContext(ctx, r.bin, r.args(args...)...)
}

// run runs one runtime command and returns its output; a failure carries the
// runtime's own message.
func (r runtimeCLI) run(ctx context.Context, args ...string) ([]byte, error) {
	out, err := r.command(ctx, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", r.bin, args[0], err, bytes.TrimSpace(out))
	}
	return out, nil
}

// containerState is the part of `runtime state` we use.
type containerState struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"` // creating, created, running, stopped
	Bundle string `json:"bundle"`
}

// state returns the container's state; an error wrapping api.ErrNotFound
// means the runtime does not know it.
func (r runtimeCLI) state(ctx context.Context, id string) (containerState, error) {
	var st containerState
	out, err := r.run(ctx, "state", id)
	if err != nil {
		// runc: "container does not exist"; runsc: "file does not exist";
		// crun: "No such file or directory".
		if msg := strings.ToLower(string(out)); strings.Contains(msg, "not exist") || strings.Contains(msg, "no such file") || strings.Contains(msg, "not found") {
			return st, api.Errorf(api.ErrNotFound, "container %s: %v", id, err)
		}
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("%s state %s: %w", r.bin, id, err)
	}
	return st, nil
}
