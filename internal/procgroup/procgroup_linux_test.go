package procgroup

import (
	"bufio"
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitGoneCountsZombies: a killed group whose members are zombies is not
// gone until they are reaped. The test process is the subreaper, so the
// members of the group, orphaned when the shell leading it dies, are its own
// to reap.
func TestWaitGoneCountsZombies(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become subreaper: %v", err)
	}
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & sleep 60 & echo started; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("read %q: %v", line, err)
	}
	if WaitGone(pgid, 50*time.Millisecond) {
		t.Fatal("WaitGone: a group with live members is gone")
	}
	if err := Kill(pgid); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	_ = cmd.Wait()
	if WaitGone(pgid, 100*time.Millisecond) {
		t.Fatal("WaitGone: a group whose members are unreaped is gone")
	}
	for {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(-pgid, &ws, 0, nil); errors.Is(err, unix.ECHILD) {
			break
		} else if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("wait4: %v", err)
		}
	}
	if !WaitGone(pgid, 5*time.Second) {
		t.Fatal("WaitGone: the group is not gone after its members were reaped")
	}
	if err := Kill(pgid); err != nil {
		t.Fatalf("Kill of a group that is gone: %v", err)
	}
}
