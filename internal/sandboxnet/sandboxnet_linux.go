package sandboxnet

import (
	"context"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// supported reports whether sandbox networks can exist on this platform:
// on Linux they can (Available checks the rest).
func supported() error { return nil }

// portsFree reports whether the DNS and proxy ports of host are free: a
// socket still bound to them (a network whose veth vanished under a live
// process) would make the new network's servers fail. The address is not
// on any interface yet, so the probe binds with IP_FREEBIND.
func portsFree(host netip.Addr) bool {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	ctx := context.Background()
	for _, p := range []uint16{ProxyPort, DNSPort} {
		ln, err := lc.Listen(ctx, "tcp4", netip.AddrPortFrom(host, p).String())
		if err != nil {
			return false
		}
		ln.Close()
	}
	pc, err := lc.ListenPacket(ctx, "udp4", netip.AddrPortFrom(host, DNSPort).String())
	if err != nil {
		return false
	}
	pc.Close()
	return true
}
