// Package seccompbpf compiles an OCI runtime-spec seccomp profile into the
// classic BPF program the kernel loads (an array of struct sock_filter), with
// libseccomp — the library runc and crun compile the same profiles with —
// reached through Debian's python3-seccomp, so the binary stays static.
//
// It exists for processes that join a running container from outside (an
// engine forked from a zygote that enters a sandbox's namespaces): they must
// end up under exactly the filter the runtime gave the container.
package seccompbpf

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

//go:embed compile.py
var compileScript string

// maxInstructions is the kernel's limit on one classic BPF program (BPF_MAXINSNS).
const maxInstructions = 4096

// InstructionSize is the size of one struct sock_filter.
const InstructionSize = 8

// ErrUnavailable means the machine cannot compile profiles: the interpreter
// or its python3-seccomp module is missing.
var ErrUnavailable = errors.New("seccompbpf: libseccomp for Python (Debian's python3-seccomp) is not installed")

// Compile returns the BPF program of prof, compiled by python (an interpreter
// with the seccomp module; "" means /usr/bin/python3). Syscall names this
// machine's libseccomp does not know are skipped, as runc does.
func Compile(ctx context.Context, python string, prof *specs.LinuxSeccomp) ([]byte, error) {
	if prof == nil {
		return nil, errors.New("seccompbpf: no profile")
	}
	if python == "" {
		python = "/usr/bin/python3"
	}
	in, err := json.Marshal(prof)
	if err != nil {
		return nil, fmt.Errorf("seccompbpf: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-I", "-c", compileScript)
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "No module named 'seccomp'") {
			return nil, ErrUnavailable
		}
		if len(msg) > 2048 {
			msg = msg[len(msg)-2048:]
		}
		return nil, fmt.Errorf("seccompbpf: compile: %v: %s", err, msg)
	}
	prog := out.Bytes()
	if n := len(prog); n == 0 || n%InstructionSize != 0 || n/InstructionSize > maxInstructions {
		return nil, fmt.Errorf("seccompbpf: compile gave %d bytes, not a BPF program of 1..%d instructions", n, maxInstructions)
	}
	return prog, nil
}
