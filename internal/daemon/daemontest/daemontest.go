// Package daemontest holds what tests of a running daemon share: starting
// `ds-sandbox serve` as a real process, one REST call, and killing the
// sandboxes a failed test leaves behind. For tests only.
package daemontest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// StartServe starts cmd, a `ds-sandbox serve --listen 127.0.0.1:0 …` built
// by the caller (its binary, arguments and environment), with its stderr on
// the test's unless set, and returns the URL it prints first. The daemon
// gets SIGTERM and is waited for when the test ends.
func StartServe(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	url, err := StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	return url
}

// StartProcess starts cmd, a `ds-sandbox serve` on a free port, and
// returns the URL it prints first. On failure the process is killed.
func StartProcess(cmd *exec.Cmd) (string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "ds-sandbox: listening on ")
	if err != nil || !ok {
		cmd.Process.Kill()
		cmd.Wait()
		return "", fmt.Errorf("serve did not start: first line %q, %v", line, err)
	}
	return url, nil
}

// Call sends body (JSON, when not nil) to url and decodes the answer into
// out (when not nil); it returns the status and logs the body of an answer
// that is not a success. It fails the test only when no answer comes.
func Call(t testing.TB, method, url string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, url, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		json.Unmarshal(b, out)
	}
	if resp.StatusCode >= 300 {
		t.Logf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// ReapOnFailure kills, when the test ends, every agent a daemon over
// stateDir left recorded: daemon-mode sandboxes outlive their daemon by
// design, so a test that fails halfway must not leave them running.
func ReapOnFailure(t testing.TB, stateDir string) {
	t.Cleanup(func() {
		es, _ := os.ReadDir(filepath.Join(stateDir, "sandboxes"))
		for _, e := range es {
			id, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok {
				continue
			}
			b, err := os.ReadFile(filepath.Join(stateDir, "sandboxes", e.Name()))
			if err != nil {
				continue
			}
			var rec struct {
				BackendState map[string]string `json:"backend_state"`
			}
			if json.Unmarshal(b, &rec) == nil {
				if pid, err := strconv.Atoi(rec.BackendState["pid"]); err == nil && pid > 1 {
					t.Logf("killing sandbox %s (agent %d) left by the test", id, pid)
					syscall.Kill(-pid, syscall.SIGKILL)
				}
			}
		}
	})
}
