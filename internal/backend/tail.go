package backend

import (
	"bytes"
	"os"
)

// Tail returns the last n bytes of the file at p, trimmed, or "" when it
// cannot be read: for error messages (an agent's or a runtime's output).
func Tail(p string, n int64) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, 0)
	}
	b := make([]byte, n)
	k, _ := f.Read(b)
	return string(bytes.TrimSpace(b[:k]))
}
