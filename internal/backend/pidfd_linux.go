package backend

import "golang.org/x/sys/unix"

// WaitPidfd blocks until the process behind the pidfd fd has exited (fd
// turns readable) or polling fd fails, then closes fd. It reaps nothing: it
// is for processes that are not the caller's children (a container's init,
// an agent a restarted daemon recovered). A pidfd pins its process, so a
// recycled pid cannot fool it.
func WaitPidfd(fd int) {
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n > 0 {
			return
		}
	}
}
