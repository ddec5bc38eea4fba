// Package nettest builds a stand-in for the internet for network policy
// tests: a network namespace of the test's own, reached from the host over a
// veth, holding documentation and special addresses with servers on them.
// Nothing leaves the machine: every address used is routed into that
// namespace, and the routes exist before any server is contacted.
//
// One Internet exists on a host at a time (a host-wide lock, held for the
// Internet's life), so tests in different packages running at once do not
// fight over addresses and routes.
package nettest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// Addresses inside the Internet. Public and Other are documentation
// addresses (TEST-NET-3) the egress policy treats as ordinary; Metadata and
// Private are special ones it refuses unless listed.
var (
	HostEnd  = netip.MustParseAddr("203.0.113.1")
	Public   = netip.MustParseAddr("203.0.113.10")
	Other    = netip.MustParseAddr("203.0.113.20")
	Metadata = netip.MustParseAddr("169.254.169.254")
	Private  = netip.MustParseAddr("192.168.213.10")
)

// UDPEchoPort is the port of a UDP echo server on Public.
const UDPEchoPort = 9999

// Internet is the stand-in. Servers on Public, Other, Metadata and Private
// answer HTTP on :80 with "hello from <addr> host=<Host>" and TLS on :443
// (a self-signed certificate; the body is the same).
type Internet struct {
	NS string // the namespace's name (ip netns)
}

// ExternalEnv, when set in a test that is not root, names the namespace of
// an Internet that a root process (Serve) runs for it: New then returns that
// one, with the same addresses and servers. scripts/test-oci-rootless.sh
// serves one so the rootless tests can reach it.
const ExternalEnv = "DSS_NETTEST_EXTERNAL"

// New builds an Internet for t, or skips t (fails it under CI: testenv) when
// the host cannot (not root, no ip command). It is torn down when t ends.
// Not root, it returns the Internet ExternalEnv names, if any.
func New(t testing.TB) *Internet {
	t.Helper()
	if os.Geteuid() != 0 {
		if ns := os.Getenv(ExternalEnv); ns != "" {
			if _, err := os.Stat("/run/netns/" + ns); err != nil {
				t.Fatalf("nettest: the Internet %s=%s is not served: %v", ExternalEnv, ns, err)
			}
			return &Internet{NS: ns}
		}
	}
	testenv.Require(t, "root (or "+ExternalEnv+")", os.Geteuid() == 0, "nettest builds a network namespace")
	_, err := exec.LookPath("ip")
	testenv.RequireNoError(t, "the ip command (iproute2; scripts/oci-setup.sh)", err)
	unlock := lock(t, "/run/ds-sandbox/test-internet.lock")
	in := &Internet{NS: fmt.Sprintf("dsst-inet-%d", os.Getpid())}
	veth := fmt.Sprintf("dsti%d", os.Getpid()%100000)
	cleanup := func() {
		_ = exec.Command("ip", "route", "del", Metadata.String()+"/32").Run()
		_ = exec.Command("ip", "route", "del", Private.String()+"/32").Run()
		_ = exec.Command("ip", "link", "del", veth).Run()
		_ = exec.Command("ip", "netns", "del", in.NS).Run()
	}
	cleanup() // leftovers of a crashed run of this pid
	t.Cleanup(func() { cleanup(); unlock() })
	for _, args := range [][]string{
		{"netns", "add", in.NS},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", in.NS},
		{"addr", "add", HostEnd.String() + "/24", "dev", veth},
		{"link", "set", veth, "up"},
		{"-n", in.NS, "link", "set", "lo", "up"},
		{"-n", in.NS, "addr", "add", Public.String() + "/24", "dev", "eth0"},
		{"-n", in.NS, "addr", "add", Other.String() + "/24", "dev", "eth0"},
		{"-n", in.NS, "addr", "add", Metadata.String() + "/32", "dev", "eth0"},
		{"-n", in.NS, "addr", "add", Private.String() + "/32", "dev", "eth0"},
		{"-n", in.NS, "link", "set", "eth0", "up"},
		{"-n", in.NS, "route", "add", "default", "via", HostEnd.String()},
		{"route", "add", Metadata.String() + "/32", "via", Public.String()},
		{"route", "add", Private.String() + "/32", "via", Public.String()},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("nettest: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	cert := selfSigned(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, a := range []netip.Addr{Public, Other, Metadata, Private} {
		ln := in.Listen(t, "tcp", netip.AddrPortFrom(a, 80).String())
		tln := tls.NewListener(in.Listen(t, "tcp", netip.AddrPortFrom(a, 443).String()), &tls.Config{Certificates: []tls.Certificate{cert}})
		srv := &http.Server{Handler: hello(a), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		go srv.Serve(tln)
		t.Cleanup(func() { srv.Close() })
	}
	pc := in.ListenPacket(t, "udp", netip.AddrPortFrom(Public, UDPEchoPort).String())
	go func() {
		buf := make([]byte, 2048)
		for ctx.Err() == nil {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return in
}

// Serve builds an Internet for t, writes its namespace's name to the file
// ready, and keeps it up until that file is removed (or t's deadline
// nears): a root process serving tests that run as another user (see
// ExternalEnv).
func Serve(t *testing.T, ready string) {
	in := New(t)
	if err := os.WriteFile(ready, []byte(in.NS), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline, ok := t.Deadline()
	for !ok || time.Until(deadline) > 10*time.Second {
		if _, err := os.Stat(ready); err != nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Log("nettest: serving until the test deadline")
}

func hello(a netip.Addr) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s host=%s", a, r.Host)
	})
}

// inNS runs f on a thread in the Internet's namespace (sockets made there
// stay there).
func (in *Internet) inNS(t testing.TB, f func()) { t.Helper(); InNS(t, "/run/netns/"+in.NS, f) }

// InNS runs f on a thread in the network namespace at path; sockets made
// there stay there (a dial from f is a connection of that namespace). Only
// f's own goroutine is in the namespace: what it starts (an http.Client's
// dials) is not — use Dialer for those.
func InNS(t testing.TB, path string, f func()) {
	t.Helper()
	if err := inNS(path, f); err != nil {
		t.Fatalf("nettest: enter %s: %v", path, err)
	}
}

// Dialer is a DialContext (for an http.Transport) whose connections are
// made in the network namespace at path.
func Dialer(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var derr error
		if err := inNS(path, func() { c, derr = (&net.Dialer{}).DialContext(ctx, network, addr) }); err != nil {
			return nil, fmt.Errorf("nettest: enter %s: %w", path, err)
		}
		return c, derr
	}
}

// Listen listens inside the Internet.
func (in *Internet) Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	in.inNS(t, func() { ln, err = net.Listen(network, addr) })
	if err != nil {
		t.Fatalf("nettest: listen %s: %v", addr, err)
	}
	return ln
}

// ListenPacket listens for packets inside the Internet.
func (in *Internet) ListenPacket(t testing.TB, network, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	var err error
	in.inNS(t, func() { pc, err = net.ListenPacket(network, addr) })
	if err != nil {
		t.Fatalf("nettest: listen %s: %v", addr, err)
	}
	return pc
}

// Resolver answers the test names: allowed.test and *.wild.test → Public,
// other.test → Other, rebind.test → 127.0.0.1, meta.test → Metadata,
// private.test → Private; anything else does not exist.
func Resolver(_ context.Context, host string) ([]netip.Addr, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	switch {
	case host == "allowed.test", strings.HasSuffix(host, ".wild.test"):
		return []netip.Addr{Public}, nil
	case host == "other.test":
		return []netip.Addr{Other}, nil
	case host == "rebind.test":
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	case host == "meta.test":
		return []netip.Addr{Metadata}, nil
	case host == "private.test":
		return []netip.Addr{Private}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nettest"},
		DNSNames:  []string{"allowed.test", "other.test", "*.wild.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// lock takes a host-wide exclusive lock, waiting for it.
func lock(t testing.TB, p string) func() {
	t.Helper()
	if err := os.MkdirAll("/run/ds-sandbox", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

// Probe is Python (3.8+, standard library only) defining probe(kind, *args),
// which tries one network operation and returns "OK <detail>" or
// "ERR <detail>"; it never raises. Kinds:
//
//	probe("dns", name)                addresses getaddrinfo returns
//	probe("http", url)                GET through the environment's proxies
//	probe("direct", url)              GET ignoring any proxy
//	probe("host", ip, port, host)     HTTP GET to ip:port with that Host
//	probe("tls", ip, port, sni)       TLS (unverified) with that SNI, then GET /
//
// An HTTP answer other than 200 (such as the egress proxy's 403) is an ERR.
//
//	probe("tcp", ip, port)            connect only
//	probe("udp", ip, port)            one datagram to an echo server
//
// Dropped packets make connects time out after 3 seconds.
const Probe = `
import socket, ssl, urllib.request

def probe(kind, *a):
    try:
        if kind == "dns":
            return "OK " + ",".join(sorted({i[4][0] for i in socket.getaddrinfo(a[0], 80, socket.AF_INET, socket.SOCK_STREAM)}))
        if kind in ("http", "direct"):
            h = [] if kind == "http" else [urllib.request.ProxyHandler({})]
            with urllib.request.build_opener(*h).open(a[0], timeout=5) as r:
                return "OK " + r.read().decode()
        if kind in ("host", "tls"):
            s = socket.create_connection((a[0], int(a[1])), timeout=3)
            if kind == "tls":
                c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE
                s = c.wrap_socket(s, server_hostname=a[2])
            s.settimeout(5)
            s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % a[2]).encode())
            data = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
            s.close()
            if not data:
                return "ERR closed without an answer"
            head, _, body = data.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            if " 200 " not in status + " ":
                return "ERR %s: %s" % (status, body.decode(errors="replace"))
            return "OK " + body.decode(errors="replace")
        if kind == "tcp":
            socket.create_connection((a[0], int(a[1])), timeout=3).close()
            return "OK connected"
        if kind == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
            s.sendto(b"ping", (a[0], int(a[1])))
            return "OK " + s.recvfrom(100)[0].decode()
        return "ERR unknown probe " + kind
    except Exception as e:
        return "ERR %s: %s" % (type(e).__name__, e)
`

// ProbeCode is the Python cell that runs one probe and prints its answer:
// Probe followed by print(probe(kind, *args)), every argument as a string.
func ProbeCode(kind string, args ...any) string {
	var b strings.Builder
	b.WriteString(Probe)
	fmt.Fprintf(&b, "\nprint(probe(%q", kind)
	for _, a := range args {
		fmt.Fprintf(&b, ", %q", fmt.Sprint(a))
	}
	b.WriteString("))")
	return b.String()
}

// HostService listens on every address of the host, as a careless host
// service would, answering "host secret"; it returns the port. A sandbox
// must not reach it.
func HostService(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 200 OK\r\n\r\nhost secret"))
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// Denials collects a network's denials for a test: Add is an OnDenial
// handler.
type Denials struct {
	mu   sync.Mutex
	list []api.NetworkDenial
}

// Add records d.
func (d *Denials) Add(x api.NetworkDenial) { d.mu.Lock(); d.list = append(d.list, x); d.mu.Unlock() }

// String lists what was recorded, for failure messages.
func (d *Denials) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprintf("%+v", d.list)
}

// Has reports whether a denial of the name host was recorded with a reason
// containing reason.
func (d *Denials) Has(host, reason string) bool {
	return d.find(func(x api.NetworkDenial) bool { return x.Host == host && strings.Contains(x.Reason, reason) })
}

// HasPacket reports whether a refused packet to ip:port over proto was
// recorded with a reason containing reason (port 0: any).
func (d *Denials) HasPacket(proto string, ip any, port int, reason string) bool {
	return d.find(func(x api.NetworkDenial) bool {
		return x.Protocol == proto && x.IP == fmt.Sprint(ip) && (port == 0 || x.Port == port) && strings.Contains(x.Reason, reason)
	})
}

// WaitPacket waits (a packet's report crosses netlink asynchronously) up
// to 5 s for HasPacket, and fails t without it.
func (d *Denials) WaitPacket(t testing.TB, proto string, ip any, port int, reason string) {
	t.Helper()
	for range 100 {
		if d.HasPacket(proto, ip, port, reason) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("no denial reported for %s to %v:%d (%q); got %s", proto, ip, port, reason, d)
}

func (d *Denials) find(f func(api.NetworkDenial) bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(d.list, f)
}
