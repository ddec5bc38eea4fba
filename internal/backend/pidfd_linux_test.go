package backend_test

import (
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

func TestWaitPidfd(t *testing.T) {
	t.Parallel()
	cmd := exec.CommandContext(t.Context(), "cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		backend.WaitPidfd(fd)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("WaitPidfd returned while the process runs")
	default:
	}
	stdin.Close() // cat exits
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	<-done
}
