package jupyter

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Config starts one ipykernel process. The zero value is usable.
type Config struct {
	// Python is the interpreter, run as
	// `Python -m ipykernel_launcher -f <connection file>`.
	// Default "/usr/bin/python3".
	Python string

	// Dir is the kernel's working directory ("" inherits ours).
	Dir string

	// Env is the kernel's full environment (nil means os.Environ()). Start
	// always sets MPLBACKEND=module://matplotlib_inline.backend_inline
	// (replacing any existing MPLBACKEND, so inline plots work) and
	// PYDEVD_DISABLE_FILE_VALIDATION=1. Give each kernel a writable HOME and
	// IPYTHONDIR: IPython keeps its history database there.
	Env []string

	// SocketDir is the parent of the fresh per-kernel socket directory
	// (default os.TempDir()). Unix socket paths are limited to 107 bytes, so
	// Start fails if SocketDir is longer than about 80 bytes.
	SocketDir string

	// StartTimeout bounds process start → kernel ready (default 60s).
	StartTimeout time.Duration

	// InterruptGrace is how long Execute waits for the cell to finish after
	// interrupting it before it kills the kernel (default 5s).
	InterruptGrace time.Duration

	// Stderr receives the kernel's stdout and stderr (default io.Discard).
	// It is written from a goroutine of os/exec.
	Stderr io.Writer

	// SysProcAttr is optional (credentials, namespaces …). Start copies it and
	// always sets Setpgid (unless Setsid is set, which also makes the kernel
	// a process-group leader) and Pdeathsig SIGKILL. The kernel must be a
	// group leader: interrupt_request makes ipykernel SIGINT its own process
	// group. When Credential is set, the socket directory and connection file
	// are chowned to it, because ipykernel rewrites the connection file.
	SysProcAttr *syscall.SysProcAttr

	// Started, when set, is called with the kernel's pid right after the
	// process started, before Start talks to it (resource limits are set
	// there). An error kills the kernel and fails Start.
	Started func(pid int) error
	// Reaped, when set, is called with the kernel's pid once its process has
	// been waited for (after Started, whatever happened since): from then on
	// the pid is no longer this kernel's.
	Reaped func(pid int)
}

// DefaultStartTimeout is Config.StartTimeout when it is zero.
const DefaultStartTimeout = 60 * time.Second

const (
	defaultPython         = "/usr/bin/python3"
	defaultStartTimeout   = DefaultStartTimeout
	defaultInterruptGrace = 5 * time.Second

	// maxSocketPath keeps the ipc socket paths (<dir>/k-5) well under the
	// 107-byte sun_path limit.
	maxSocketPath = 100

	inlineBackend = "module://matplotlib_inline.backend_inline"
)

// withDefaults returns cfg with every unset field defaulted.
func (cfg Config) withDefaults() Config {
	if cfg.Python == "" {
		cfg.Python = defaultPython
	}
	if cfg.SocketDir == "" {
		cfg.SocketDir = os.TempDir()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = defaultStartTimeout
	}
	if cfg.InterruptGrace <= 0 {
		cfg.InterruptGrace = defaultInterruptGrace
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	return cfg
}

// kernelEnv returns the environment for the kernel process: cfg.Env (or ours)
// with MPLBACKEND and PYDEVD_DISABLE_FILE_VALIDATION forced.
func (cfg Config) kernelEnv() []string {
	base := cfg.Env
	if base == nil {
		base = os.Environ()
	}
	env := make([]string, 0, len(base)+2)
	for _, kv := range base {
		if strings.HasPrefix(kv, "MPLBACKEND=") || strings.HasPrefix(kv, "PYDEVD_DISABLE_FILE_VALIDATION=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "MPLBACKEND="+inlineBackend, "PYDEVD_DISABLE_FILE_VALIDATION=1")
}

// connectionInfo is the kernel connection file.
type connectionInfo struct {
	ShellPort       int    `json:"shell_port"`
	IOPubPort       int    `json:"iopub_port"`
	StdinPort       int    `json:"stdin_port"`
	ControlPort     int    `json:"control_port"`
	HBPort          int    `json:"hb_port"`
	IP              string `json:"ip"`
	Key             string `json:"key"`
	Transport       string `json:"transport"`
	SignatureScheme string `json:"signature_scheme"`
	KernelName      string `json:"kernel_name"`
}

// endpoint returns the ipc endpoint of one of the kernel's sockets.
func (ci connectionInfo) endpoint(port int) string {
	return fmt.Sprintf("ipc://%s-%d", ci.IP, port)
}

// prepareDir creates a fresh 0700 socket directory under cfg.SocketDir and
// writes the connection file into it. On error nothing is left behind.
func (cfg Config) prepareDir(key string) (dir, connFile string, ci connectionInfo, err error) {
	tmp, err := os.MkdirTemp(cfg.SocketDir, "jk")
	if err != nil {
		return "", "", ci, fmt.Errorf("create socket dir: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	dir = tmp
	ci = connectionInfo{
		ShellPort: 1, IOPubPort: 2, StdinPort: 3, ControlPort: 4, HBPort: 5,
		IP:              filepath.Join(dir, "k"),
		Key:             key,
		Transport:       "ipc",
		SignatureScheme: "hmac-sha256",
	}
	if n := len(ci.IP) + len("-5"); n > maxSocketPath {
		return "", "", ci, fmt.Errorf("socket path %s-5 is %d bytes, over the %d-byte limit for unix sockets: set Config.SocketDir to a shorter directory", ci.IP, n, maxSocketPath)
	}
	b, err := json.MarshalIndent(ci, "", "  ")
	if err != nil {
		return "", "", ci, fmt.Errorf("encode connection file: %w", err)
	}
	connFile = filepath.Join(dir, "conn.json")
	if err := os.WriteFile(connFile, b, 0o600); err != nil {
		return "", "", ci, fmt.Errorf("write connection file: %w", err)
	}
	if err := cfg.chownToKernel(dir, connFile); err != nil {
		return "", "", ci, err
	}
	return dir, connFile, ci, nil
}
