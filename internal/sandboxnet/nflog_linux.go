package sandboxnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// The nfnetlink_log socket (see nflog.go for the protocol and the parser).

// openPacketLogFrom binds the first free group from first on (within
// 0x4000..0x7fff). A group is bound by one socket at most, so a group it
// returns is this network's alone: another pool's network (another daemon)
// or one past the first 16384 of a wide pool cannot receive its packets, nor
// it theirs. The rules name the group only after it is bound.
func openPacketLogFrom(first uint16) (*packetLog, uint16, error) {
	var errs []error
	for i := range uint16(groupTries) {
		g := 0x4000 | (first+i)&0x3fff
		l, err := openPacketLog(g)
		if err == nil {
			return l, g, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EBUSY) {
			break // not a group taken: the next would fail alike
		}
	}
	return nil, 0, errors.Join(errs...)
}

// packetLog is a bound nfnetlink_log socket.
//
// The kernel queues a packet's message on the socket before the rule that
// follows the log rule rejects it, so by the time a program learns it was
// refused, the message is in the socket. flush reports everything queued
// there: called when an execution ends, it puts every packet the execution
// caused among its denials. run and flush take mu around each read and its
// reports, so a message is reported once and in order.
type packetLog struct {
	f      *os.File
	mu     sync.Mutex
	report func(api.NetworkDenial)
	buf    []byte // guarded by mu
}

// openPacketLog binds group. EPERM (or EBUSY) means another socket holds it.
func openPacketLog(group uint16) (*packetLog, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	return bindPacketLog(fd, group)
}

// bindPacketLog binds group on fd, a NETLINK_NETFILTER socket not yet
// bound (made in the namespace whose packets it is to receive), which it
// takes over, closing it on error.
func bindPacketLog(fd int, group uint16) (*packetLog, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	l := &packetLog{f: os.NewFile(uintptr(fd), "nflog")}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, logCopy)
	mode[4] = nfulnlCopyPacket
	// Each packet is sent at once (a queue of one), not batched for up to
	// a second: the denial must reach the execution that caused it before
	// that execution ends.
	one := binary.BigEndian.AppendUint32(nil, 1)
	msg := configMsg(group, attr(nfulaCfgCmd, []byte{nfulnlCfgCmdBind}), attr(nfulaCfgMode, mode),
		attr(nfulaCfgQthresh, one), attr(nfulaCfgTimeout, one))
	if err := l.request(msg); err != nil {
		l.close()
		return nil, fmt.Errorf("bind nflog group %d: %w", group, err)
	}
	return l, nil
}

// request sends msg and waits (at most 5 s) for the kernel's ack.
func (l *packetLog) request(msg []byte) error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return !errors.Is(serr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	_ = l.f.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer l.f.SetReadDeadline(time.Time{})
	buf := make([]byte, 8192)
	for {
		n, err := l.read(buf)
		if err != nil {
			return err
		}
		for m := buf[:n]; len(m) >= nlmsgHdrLen; {
			size := int(binary.NativeEndian.Uint32(m))
			if size < nlmsgHdrLen || size > len(m) {
				break
			}
			if binary.NativeEndian.Uint16(m[4:]) == nlmsgError && size >= nlmsgHdrLen+4 {
				if errno := -int32(binary.NativeEndian.Uint32(m[nlmsgHdrLen:])); errno != 0 {
					return syscall.Errno(errno)
				}
				return nil
			}
			m = m[min(nlAlign(size), len(m)):]
		}
	}
}

func (l *packetLog) read(buf []byte) (int, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
		return !errors.Is(rerr, unix.EAGAIN)
	}); err != nil {
		return 0, err
	}
	return n, rerr
}

// run reads logged packets until the socket is closed and reports each as
// a denial. A receive buffer overrun (ENOBUFS) loses packets, not the loop.
func (l *packetLog) run() {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return
	}
	for {
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			rerr = l.readOne(int(fd))
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			return // closed
		}
		if rerr != nil && !errors.Is(rerr, unix.ENOBUFS) && !errors.Is(rerr, unix.EINTR) {
			return
		}
	}
}

// flush reports every message queued on the socket now, without waiting
// for more.
func (l *packetLog) flush() {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for range 1024 { // bounded: a flood keeps coming
			if err := l.readOne(int(fd)); err != nil && !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EINTR) {
				return
			}
		}
	})
}

// readOne receives one message without blocking and reports its packets;
// l.mu is held.
func (l *packetLog) readOne(fd int) error {
	if l.buf == nil {
		l.buf = make([]byte, 64<<10)
	}
	n, _, err := unix.Recvfrom(fd, l.buf, unix.MSG_DONTWAIT)
	if err != nil {
		return err
	}
	for _, d := range parseLogMessages(l.buf[:n], time.Now()) {
		l.report(d)
	}
	return nil
}

func (l *packetLog) close() { _ = l.f.Close() }
