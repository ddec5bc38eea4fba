// Package audit writes the audit log: one JSON object per line for every
// action taken through the API (who, what, which sandbox, when, outcome), with
// size-based rotation. It is a typed sink of its own, not a log level.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Outcomes.
const (
	OK     = "ok"
	Error  = "error"
	Denied = "denied"
	// Blocked: the code scanner (scanner_mode block) refused to run a cell.
	Blocked = "blocked"
	// OOM: the cell's kernel was killed by the sandbox's memory limit.
	OOM = "oom"
	// Timeout: the cell ran past its timeout and was interrupted.
	Timeout = "timeout"
	// Cancelled: the client went away (or stopped reading a stream and was
	// cut) before the answer; recorded with status 499.
	Cancelled = "cancelled"
)

// Record is one audit line.
type Record struct {
	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id,omitempty"`
	// KeyID is the API key's id ("" without keys); Remote the client address.
	KeyID  string `json:"key_id,omitempty"`
	Remote string `json:"remote,omitempty"`
	// Action is what was asked: sandbox.create, sandbox.kill, sandbox.timeout,
	// execute, files.read, files.write, files.remove, command.run, context.*,
	// template.*, dataset.*, auth, …
	Action    string `json:"action"`
	SandboxID string `json:"sandbox_id,omitempty"`
	Outcome   string `json:"outcome"`
	Status    int    `json:"status,omitempty"`
	Error     string `json:"error,omitempty"`
	// CodeSHA256 and CodeSize identify executed code or a command line; Code
	// holds it only when the daemon is configured to record code.
	CodeSHA256 string            `json:"code_sha256,omitempty"`
	CodeSize   int               `json:"code_size,omitempty"`
	Code       string            `json:"code,omitempty"`
	Detail     map[string]string `json:"detail,omitempty"`
}

// SetCode identifies executed code or a command line: its sha256 and size,
// and the text itself when keep (audit_log_code).
func (r *Record) SetCode(code string, keep bool) {
	sum := sha256.Sum256([]byte(code))
	r.CodeSHA256, r.CodeSize = hex.EncodeToString(sum[:]), len(code)
	if keep {
		r.Code = code
	}
}

// SetDetail sets one detail of the record.
func (r *Record) SetDetail(k, v string) {
	if r.Detail == nil {
		r.Detail = map[string]string{}
	}
	r.Detail[k] = v
}

// SetExecution records how an execution ended when that is more than ok:
// blocked by the code scanner, killed by the memory limit, or timed out. An
// exception raised by the cell is an ordinary result (outcome ok).
func (r *Record) SetExecution(exec *api.Execution) {
	if exec == nil || exec.Error == nil {
		return
	}
	switch {
	case exec.Error.Name == api.ErrNameScanBlocked:
		r.Outcome = Blocked
		r.SetDetail("findings", strconv.Itoa(len(exec.Findings)))
	case exec.OOMKilled:
		r.Outcome = OOM
	case exec.Error.Name == api.ErrNameTimeout:
		r.Outcome = Timeout
	}
}

// Finish gives the record how its request ended: the outcome the handler
// set (blocked, oom, timeout) when it succeeded, else ok; for a failure,
// cancelled (the client went away), denied (refused: no key, not allowed,
// over a quota) or error, with the error's text. Every face uses it.
func (r *Record) Finish(failed bool, err error) {
	switch {
	case !failed && err == nil && r.Outcome != "":
	case !failed && err == nil:
		r.Outcome = OK
	case errors.Is(err, api.ErrCancelled):
		r.Outcome = Cancelled
	case errors.Is(err, api.ErrUnauthenticated) || errors.Is(err, api.ErrPermission) || errors.Is(err, api.ErrLimit):
		r.Outcome = Denied
	default:
		r.Outcome = Error
	}
	if err != nil {
		r.Error = err.Error()
	}
}

type ctxKey struct{}

// WithRecord returns ctx carrying the audit record of the request being
// served, for the handlers below the one that writes it to fill in.
func WithRecord(ctx context.Context, r *Record) context.Context {
	return context.WithValue(ctx, ctxKey{}, r)
}

// FromContext returns the request's audit record, or a fresh one nobody
// writes when the request is not audited.
func FromContext(ctx context.Context) *Record {
	if r, ok := ctx.Value(ctxKey{}).(*Record); ok && r != nil {
		return r
	}
	return &Record{}
}

// Log is an append-only JSON-lines file rotated by size. Safe for concurrent
// use.
type Log struct {
	mu       sync.Mutex
	path     string
	f        *os.File
	size     int64
	maxBytes int64
	backups  int
}

// Open opens (creating, mode 0600) the log at path. Past maxBytes the file is
// renamed to path.1 (older backups shift to .2 …, at most backups are kept).
func Open(path string, maxBytes int64, backups int) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l := &Log{path: path, maxBytes: maxBytes, backups: backups}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit log: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Write appends r (setting Time when zero). A record is never split across
// files.
func (l *Log) Write(r Record) error {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return fmt.Errorf("audit log %s is closed", l.path)
	}
	if l.maxBytes > 0 && l.size > 0 && l.size+int64(len(b)) > l.maxBytes {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// rotate shifts path.N-1 → path.N … path → path.1 and opens a fresh file.
// l.mu must be held.
func (l *Log) rotate() error {
	l.f.Close()
	l.f = nil
	if l.backups <= 0 {
		os.Remove(l.path)
	} else {
		os.Remove(fmt.Sprintf("%s.%d", l.path, l.backups))
		for i := l.backups - 1; i >= 1; i-- {
			os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1))
		}
		if err := os.Rename(l.path, l.path+".1"); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("audit log rotate: %w", err)
		}
	}
	return l.open()
}

// Close closes the file; later writes fail.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
