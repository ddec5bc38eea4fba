package jupyter

import (
	"io"
	"strings"
	"sync"
)

// tailWriter forwards writes to w and keeps the last max bytes, so start
// failures can quote the kernel's last words ("No module named ipykernel").
type tailWriter struct {
	w   io.Writer
	max int

	mu  sync.Mutex
	buf []byte
}

// Write implements io.Writer. Errors from the forwarded writer are ignored so
// that a broken log sink never blocks or kills the kernel's output pipe.
func (t *tailWriter) Write(p []byte) (int, error) {
	_, _ = t.w.Write(p)
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.mu.Unlock()
	return len(p), nil
}

// tail returns the kept output, trimmed of surrounding white space.
func (t *tailWriter) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
