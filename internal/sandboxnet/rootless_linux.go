package sandboxnet

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// open makes the sockets of the DNS server, the proxy and the packet log
// inside the namespace, through the helper.
func (u *userNet) open(ctx context.Context, s *sockets, logger func(msg string, args ...any)) error {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "helper"), os.NewFile(uintptr(pair[1]), "helper")
	defer mine.Close()
	specs := []string{
		"tcp:" + netip.AddrPortFrom(loopback, ProxyPort).String(),
		"tcp:" + netip.AddrPortFrom(loopback, DNSPort).String(),
		"udp:" + netip.AddrPortFrom(loopback, DNSPort).String(),
		"netfilter",
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	argv := append(append(u.helper[:len(u.helper):len(u.helper)], "5"), specs...)
	cmd, err := u.enter(ctx, []*os.File{theirs}, argv...)
	if err != nil {
		theirs.Close()
		return err
	}
	cmd.Env = append(os.Environ(), u.helperEnv...)
	out, err := cmd.CombinedOutput()
	theirs.Close()
	if err != nil {
		return fmt.Errorf("make the sandbox's DNS and proxy sockets in its namespace (%s): %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	oob := make([]byte, unix.CmsgSpace(4*len(specs)))
	_, oobn, _, _, err := unix.Recvmsg(pair[0], make([]byte, 1), oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return fmt.Errorf("receive the sandbox's sockets: %w", err)
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if got, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), specs[min(i, len(specs)-1)])
	}
	defer func() {
		for _, f := range files {
			f.Close() // the net package holds duplicates
		}
	}()
	if len(fds) != len(specs) {
		return fmt.Errorf("the helper sent %d sockets, want %d", len(fds), len(specs))
	}
	if s.proxy, err = net.FileListener(files[0]); err != nil {
		return err
	}
	if s.dnsTCP, err = net.FileListener(files[1]); err != nil {
		return err
	}
	if s.dnsUDP, err = net.FilePacketConn(files[2]); err != nil {
		return err
	}
	fd, err := unix.Dup(int(files[3].Fd()))
	if err == nil {
		unix.CloseOnExec(fd)
		s.plog, err = bindPacketLog(fd, rootlessLogGroup)
	}
	if err != nil {
		// The packets are still refused; only their reports are lost.
		logger("sandboxnet: packets the rules refuse will not be reported", "err", err)
		s.plog = nil
	} else {
		s.group = rootlessLogGroup
	}
	return nil
}
