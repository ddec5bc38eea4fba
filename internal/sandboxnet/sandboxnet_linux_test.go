package sandboxnet

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// TestPortsFreeSeesStaleListeners: a socket still bound to a pool address
// (its interface gone) keeps that slot from being handed out again.
func TestPortsFreeSeesStaleListeners(t *testing.T) {
	a := netip.MustParseAddr("10.213.254.253")
	if !portsFree(a) {
		t.Skip("the probe address is in use here")
	}
	var lc net.ListenConfig
	lc.Control = func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1) })
	}
	ln, err := lc.Listen(context.Background(), "tcp4", netip.AddrPortFrom(a, ProxyPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if portsFree(a) {
		t.Error("a bound proxy port was taken for free")
	}
}

// TestPacketLogGroupsAreExclusive: a group another socket holds (another
// daemon's network, say) is never shared: the next one is taken.
func TestPacketLogGroupsAreExclusive(t *testing.T) {
	testenv.Require(t, "root", os.Geteuid() == 0, "binding an nfnetlink_log group needs CAP_NET_ADMIN")
	const first = 0x4000 + 0x3ff0
	a, ga, err := openPacketLogFrom(first)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	b, gb, err := openPacketLogFrom(ga)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if ga == gb || gb < 0x4000 || gb > 0x7fff {
		t.Fatalf("groups %#x and %#x: want two different ones in 0x4000..0x7fff", ga, gb)
	}
}

// TestPortsFreeUnderConcurrentProbes: probes of one free address at the same
// time (concurrent creates, several daemons' Available) do not see each
// other as a service holding the ports (a create was refused "allow" in CI
// because of that).
func TestPortsFreeUnderConcurrentProbes(t *testing.T) {
	a := netip.MustParseAddr("10.213.254.249")
	if !portsFree(a) {
		t.Skip("the probe address is in use here")
	}
	var wg sync.WaitGroup
	var taken atomic.Int32
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if !portsFree(a) {
					taken.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := taken.Load(); n > 0 {
		t.Fatalf("%d of 160 concurrent probes of a free address said its ports were taken", n)
	}
}
