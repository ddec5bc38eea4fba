package nettest

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// inNS runs f on a thread of its own that entered the network namespace at
// path; the thread is never reused.
func inNS(path string, f func()) error {
	done := make(chan struct{})
	var ferr error
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := os.Open(path)
		if err != nil {
			ferr = err
			return
		}
		defer ns.Close()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			ferr = err
			return
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ferr = err
			return
		}
		f()
	}()
	<-done
	return ferr
}
