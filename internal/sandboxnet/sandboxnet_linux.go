package sandboxnet

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// supported reports whether sandbox networks can exist on this platform:
// on Linux they can (Available checks the rest).
func supported() error { return nil }

// portsFree reports whether the DNS and proxy ports of host are free: a
// socket still bound to them (a network whose veth vanished under a live
// process) would make the new network's servers fail. The address is not
// on any interface yet, so the probe binds with IP_FREEBIND. Another probe
// of the same address (a concurrent create, another daemon's Available)
// holds the ports for a moment: only ports taken on every one of a few
// tries, apart, count as taken.
func portsFree(host netip.Addr) bool {
	for try := range 5 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 20 * time.Millisecond)
		}
		if probePorts(host) {
			return true
		}
	}
	return false
}

func probePorts(host netip.Addr) bool {
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
