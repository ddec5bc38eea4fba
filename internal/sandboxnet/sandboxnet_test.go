package sandboxnet_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet/nettest"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// These tests attack the host-side enforcement with a plain process in the
// sandbox's namespace (root there, so also with the tools a sandbox lacks);
// internal/backend/oci runs the same attacks from inside containers.

func newManager(t *testing.T) *sandboxnet.Manager {
	t.Helper()
	testenv.RequireRoot(t)
	m, err := sandboxnet.New(sandboxnet.Config{Tag: fmt.Sprintf("t%d", os.Getpid()%100000), Resolver: nettest.Resolver})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Available(); err != nil {
		t.Fatalf("as root, sandbox networks must be available (scripts/oci-setup.sh installs ip and nft): %v", err)
	}
	return m
}

// wantRefused: the probe failed at once with a refusal (the rules' TCP
// reset), not after a timeout.
func wantRefused(t *testing.T, got string) {
	t.Helper()
	if !strings.HasPrefix(got, "ERR ConnectionRefusedError") {
		t.Errorf("want a refused connection, got %q", got)
	}
}

var keys int

func create(t *testing.T, m *sandboxnet.Manager, pol api.NetworkPolicy) (*sandboxnet.Net, *nettest.Denials) {
	t.Helper()
	keys++
	n, err := m.Create(context.Background(), sandboxnet.KeyFor(fmt.Sprint(t.Name(), keys)), pol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if err := n.Join(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	d := &nettest.Denials{}
	n.OnDenial(d.Add)
	// ip netns exec bind-mounts /etc/netns/<name>/* over /etc.
	dir := filepath.Join("/etc/netns", filepath.Base(n.NetnsPath()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(n.ResolvConf()), 0o644); err != nil {
		t.Fatal(err)
	}
	return n, d
}

// probe runs nettest.Probe in the namespace, with env, and returns its line.
func probe(t *testing.T, n *sandboxnet.Net, env []string, kind string, args ...any) string {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(n.NetnsPath()), "/usr/bin/python3", "-c", nettest.ProbeCode(kind, args...))
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe %s %v: %v: %s", kind, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func wantOK(t *testing.T, got, contains string) {
	t.Helper()
	if !strings.HasPrefix(got, "OK") || !strings.Contains(got, contains) {
		t.Errorf("want OK with %q, got %q", contains, got)
	}
}

func wantERR(t *testing.T, got string) {
	t.Helper()
	if !strings.HasPrefix(got, "ERR") {
		t.Errorf("want ERR, got %q", got)
	}
}

func TestAllow(t *testing.T) {
	m := newManager(t)
	nettest.New(t)
	n, d := create(t, m, api.NetworkPolicy{Policy: api.NetworkAllow})
	port := nettest.HostService(t)

	wantOK(t, probe(t, n, nil, "dns", "allowed.test"), nettest.Public.String())
	wantOK(t, probe(t, n, nil, "direct", "http://allowed.test/"), "hello from "+nettest.Public.String())
	wantOK(t, probe(t, n, nil, "tls", nettest.Other, 443, "anything"), "hello from "+nettest.Other.String())
	wantOK(t, probe(t, n, nil, "udp", nettest.Public, nettest.UDPEchoPort), "ping")

	// The host reaches these (the routes exist); the sandbox must not. It is
	// refused at once, and each refusal is reported.
	// A refusal the program saw is reported by the time FlushDenials
	// returns (no waiting: the kernel queues the report before it rejects).
	for _, a := range []any{nettest.Metadata, nettest.Private} {
		wantRefused(t, probe(t, n, nil, "tcp", a, 80))
		n.FlushDenials()
		if !d.HasPacket("tcp", a, 80, "link-local (metadata)") {
			t.Errorf("after FlushDenials, no denial for tcp to %v:80: %s", a, d)
		}
	}
	wantERR(t, probe(t, n, nil, "udp", nettest.Private, nettest.UDPEchoPort))
	d.WaitPacket(t, "udp", nettest.Private, nettest.UDPEchoPort, "private")
	wantRefused(t, probe(t, n, nil, "tcp", n.HostAddr(), port))
	d.WaitPacket(t, "tcp", n.HostAddr(), port, "the host itself")
	wantERR(t, probe(t, n, nil, "tcp", "127.0.0.1", port)) // its own loopback: nothing there
	// DNS rebinding: names resolving to special addresses get no answer.
	wantERR(t, probe(t, n, nil, "dns", "rebind.test"))
	wantERR(t, probe(t, n, nil, "dns", "meta.test"))
	// A DNS server of its choosing is still ours.
	if got := probe(t, n, nil, "udp", "203.0.113.10", 53); strings.HasPrefix(got, "OK ping") {
		t.Errorf("DNS to another server was not redirected: %q", got)
	}
}

func TestAllowOtherSandbox(t *testing.T) {
	m := newManager(t)
	a, _ := create(t, m, api.NetworkPolicy{Policy: api.NetworkAllow})
	b, _ := create(t, m, api.NetworkPolicy{Policy: api.NetworkAllow})
	// A server in b.
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(b.NetnsPath()), "/usr/bin/python3", "-m", "http.server", "--bind", b.SandboxAddr().String(), "8000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if !waitTCP(b, 8000) {
		t.Fatal("the server in b did not start")
	}
	wantERR(t, probe(t, a, nil, "tcp", b.SandboxAddr(), 8000))
	wantERR(t, probe(t, a, nil, "tcp", b.HostAddr(), sandboxnet.ProxyPort))
}

// waitTCP waits until the host can connect to n's address at port.
func waitTCP(n *sandboxnet.Net, port int) bool {
	for range 100 {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", n.SandboxAddr(), port), time.Second)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func TestWhitelist(t *testing.T) {
	m := newManager(t)
	nettest.New(t)
	// 203.0.113.1 is listed, but it is an address of the host itself (the
	// test internet's host end): the proxy must not dial it.
	n, d := create(t, m, api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test", "*.wild.test", "rebind.test", nettest.HostEnd.String()}})
	proxy := []string{"HTTP_PROXY=" + n.ProxyURL(), "http_proxy=" + n.ProxyURL(), "HTTPS_PROXY=" + n.ProxyURL(), "https_proxy=" + n.ProxyURL()}

	// Through the proxy and transparently.
	wantOK(t, probe(t, n, proxy, "http", "http://allowed.test/"), "hello from "+nettest.Public.String())
	wantOK(t, probe(t, n, proxy, "http", "http://a.wild.test/x"), "hello from "+nettest.Public.String())
	wantOK(t, probe(t, n, nil, "direct", "http://allowed.test/"), "hello from "+nettest.Public.String())
	wantOK(t, probe(t, n, nil, "tls", nettest.Public, 443, "allowed.test"), "hello from "+nettest.Public.String())
	wantOK(t, probe(t, n, nil, "dns", "allowed.test"), nettest.Public.String())

	// Not listed.
	wantERR(t, probe(t, n, proxy, "http", "http://other.test/"))
	wantERR(t, probe(t, n, nil, "dns", "other.test"))
	if !d.Has("other.test", "") {
		t.Errorf("no denial reported for other.test: %s", d)
	}
	wantERR(t, probe(t, n, nil, "host", nettest.Other, 80, "other.test"))
	// SNI/Host mismatch: a listed name, an unlisted destination.
	wantERR(t, probe(t, n, nil, "tls", nettest.Other, 443, "allowed.test"))
	wantERR(t, probe(t, n, nil, "host", nettest.Other, 80, "allowed.test"))
	// IP literals, the metadata address, DNS rebinding, UDP.
	wantERR(t, probe(t, n, nil, "host", nettest.Public, 80, nettest.Public))
	wantERR(t, probe(t, n, nil, "host", nettest.Metadata, 80, "169.254.169.254"))
	wantERR(t, probe(t, n, proxy, "http", "http://169.254.169.254/latest/meta-data/"))
	wantERR(t, probe(t, n, proxy, "http", "http://rebind.test/"))
	wantERR(t, probe(t, n, nil, "dns", "rebind.test"))
	wantERR(t, probe(t, n, nil, "udp", nettest.Public, nettest.UDPEchoPort))
	d.WaitPacket(t, "udp", nettest.Public, nettest.UDPEchoPort, "under whitelist only TCP")
	// The host's own services.
	port := nettest.HostService(t)
	wantERR(t, probe(t, n, nil, "host", n.HostAddr(), port, "x"))
	wantERR(t, probe(t, n, proxy, "http", fmt.Sprintf("http://%s:%d/", n.HostAddr(), port)))
	wantERR(t, probe(t, n, proxy, "http", fmt.Sprintf("http://127.0.0.1:%d/", port)))
	wantERR(t, probe(t, n, nil, "host", nettest.HostEnd, port, nettest.HostEnd))
	wantERR(t, probe(t, n, proxy, "http", fmt.Sprintf("http://%s:%d/", nettest.HostEnd, port)))
}

func TestSetPolicy(t *testing.T) {
	m := newManager(t)
	nettest.New(t)
	n, d := create(t, m, api.NetworkPolicy{Policy: api.NetworkAllow})
	ctx := context.Background()
	wantOK(t, probe(t, n, nil, "direct", "http://other.test/"), "hello")

	// A caller that has gone away does not leave the rules half-changed:
	// the change is made anyway.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := n.SetPolicy(gone, api.NetworkPolicy{Policy: api.NetworkDeny}); err != nil {
		t.Fatal(err)
	}
	wantERR(t, probe(t, n, nil, "dns", "allowed.test"))
	wantRefused(t, probe(t, n, nil, "tcp", nettest.Public, 80))
	d.WaitPacket(t, "tcp", nettest.Public, 80, "under deny nothing")
	wantERR(t, probe(t, n, nil, "udp", nettest.Public, nettest.UDPEchoPort))

	if err := n.SetPolicy(ctx, api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}); err != nil {
		t.Fatal(err)
	}
	wantOK(t, probe(t, n, nil, "direct", "http://allowed.test/"), "hello from "+nettest.Public.String())
	wantERR(t, probe(t, n, nil, "host", nettest.Other, 80, "other.test"))
	wantERR(t, probe(t, n, nil, "udp", nettest.Public, nettest.UDPEchoPort))

	if err := n.SetPolicy(ctx, api.NetworkPolicy{Policy: api.NetworkAllow}); err != nil {
		t.Fatal(err)
	}
	wantOK(t, probe(t, n, nil, "direct", "http://other.test/"), "hello from "+nettest.Other.String())
	if err := n.SetPolicy(ctx, api.NetworkPolicy{Policy: "open"}); err == nil {
		t.Error("a bad policy was accepted")
	}
}

func TestRecoverAndReap(t *testing.T) {
	m := newManager(t)
	nettest.New(t)
	ctx := context.Background()
	pol := api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}
	n, _ := create(t, m, pol)
	state := n.State()
	n.Detach() // the daemon died: listeners gone, namespace and rules stay
	wantERR(t, probe(t, n, nil, "dns", "allowed.test"))

	r, err := m.Recover(ctx, state, pol)
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, probe(t, r, nil, "direct", "http://allowed.test/"), "hello from")
	wantERR(t, probe(t, r, nil, "host", nettest.Other, 80, "other.test"))
	r.Detach()

	// Nobody knows it: reaped, and Recover then says it is gone.
	k, err := m.Reap(ctx, func(string) bool { return false })
	if err != nil || k < 1 {
		t.Fatalf("reap: %d, %v", k, err)
	}
	if _, err := os.Stat(n.NetnsPath()); !os.IsNotExist(err) {
		t.Errorf("namespace survived the reap: %v", err)
	}
	if _, err := m.Recover(ctx, state, pol); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("recover after reap: %v, want not found", err)
	}
	if out, _ := exec.Command("iptables", "-w", "-S", "FORWARD").Output(); strings.Contains(string(out), sandboxnetVeth(n)) {
		t.Errorf("iptables rules survived the reap:\n%s", out)
	}
}

// TestRecoverFailureRemovesTheNetwork: when a network cannot be started
// again (its proxy's port is taken), Recover fails and leaves nothing for
// a later reap: the caller stops the sandbox.
func TestRecoverFailureRemovesTheNetwork(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	pol := api.NetworkPolicy{Policy: api.NetworkAllow}
	n, _ := create(t, m, pol)
	state := n.State()
	n.Detach()
	ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", n.HostAddr(), sandboxnet.ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := m.Recover(ctx, state, pol); err == nil {
		t.Fatal("Recover succeeded with the proxy's port taken")
	} else {
		t.Logf("recover: %v", err)
	}
	if _, err := os.Stat(n.NetnsPath()); !os.IsNotExist(err) {
		t.Errorf("the namespace survived a failed recovery: %v", err)
	}
	if _, err := net.InterfaceByName(sandboxnetVeth(n)); err == nil {
		t.Error("the veth survived a failed recovery")
	}
	table := strings.ReplaceAll(filepath.Base(n.NetnsPath()), "-", "_")
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), table) {
		t.Errorf("the nftables table survived a failed recovery:\n%s", out)
	}
}

func sandboxnetVeth(n *sandboxnet.Net) string {
	s := n.String()
	return strings.Fields(s)[1]
}

// benchManager is the manager the benchmarks make networks with, beside a
// stand-in internet.
func benchManager(b *testing.B) *sandboxnet.Manager {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	m, err := sandboxnet.New(sandboxnet.Config{Tag: fmt.Sprintf("b%d", os.Getpid()%100000), Resolver: nettest.Resolver})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Available(); err != nil {
		b.Skip(err)
	}
	nettest.New(b)
	return m
}

// benchNet is the namespace a case runs in: a fresh network under pol, or
// the host's own (the baseline, nil Net) when pol names no policy.
func benchNet(b *testing.B, m *sandboxnet.Manager, pol api.NetworkPolicy) (*sandboxnet.Net, string) {
	if pol.Policy == "" {
		return nil, "/proc/self/ns/net"
	}
	n, err := m.Create(context.Background(), sandboxnet.KeyFor(b.Name()), pol)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close(context.Background()) })
	if err := n.Join(context.Background(), 0); err != nil {
		b.Fatal(err)
	}
	return n, n.NetnsPath()
}

// measure runs op b.N times in the namespace nsPath, stopping at its first
// error, and reports p50/p99 per op.
func measure(b *testing.B, nsPath string, op func() error) {
	var lat []time.Duration
	nettest.InNS(b, nsPath, func() {
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if err := op(); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
	})
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkEgress measures one HTTP request (a new connection each: dial,
// GET, read) from a sandbox's namespace to the stand-in internet: routed
// under allow, redirected through the egress proxy under whitelist, and
// through the proxy by name (HTTP_PROXY); and, as the baseline, from the
// host itself with no sandbox in the way. It reports p50/p99 per request.
func BenchmarkEgress(b *testing.B) {
	m := benchManager(b)
	for _, c := range []struct {
		name  string
		pol   api.NetworkPolicy
		proxy bool
	}{
		{"host-baseline", api.NetworkPolicy{}, false},
		{"allow", api.NetworkPolicy{Policy: api.NetworkAllow}, false},
		{"whitelist-transparent", api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}, false},
		{"whitelist-http-proxy", api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			n, nsPath := benchNet(b, m, c.pol)
			target := "http://" + nettest.Public.String() + "/"
			// The transport dials on goroutines of its own: they must dial
			// in the sandbox's namespace too (the baseline pays the same).
			tr := &http.Transport{DisableKeepAlives: true, DialContext: nettest.Dialer(nsPath)}
			if c.proxy {
				u, _ := url.Parse(n.ProxyURL())
				tr.Proxy = http.ProxyURL(u)
				target = "http://allowed.test/"
			}
			hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			measure(b, nsPath, func() error {
				req, _ := http.NewRequest(http.MethodGet, target, nil)
				req.Host = "allowed.test"
				resp, err := hc.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			})
		})
	}
}

// BenchmarkRefused measures how long a program waits to learn that a
// connection is refused: a TCP connect from an allow sandbox to the metadata
// address, rejected by the rules (and logged), beside a connect on the
// host to a closed loopback port (the kernel's own reset). Before refused
// packets were rejected, the program waited for its own timeout.
func BenchmarkRefused(b *testing.B) {
	m := benchManager(b)
	closed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	for _, c := range []struct {
		name, target string
		pol          api.NetworkPolicy
	}{
		{"host-closed-port", closedAddr, api.NetworkPolicy{}},
		{"allow-metadata", nettest.Metadata.String() + ":80", api.NetworkPolicy{Policy: api.NetworkAllow}},
	} {
		b.Run(c.name, func(b *testing.B) {
			_, nsPath := benchNet(b, m, c.pol)
			measure(b, nsPath, func() error {
				conn, err := net.DialTimeout("tcp4", c.target, 10*time.Second)
				if err == nil {
					conn.Close()
					return fmt.Errorf("%s: connected", c.target)
				}
				if !errors.Is(err, syscall.ECONNREFUSED) {
					return fmt.Errorf("%s: %v, want connection refused", c.target, err)
				}
				return nil
			})
		})
	}
}

// TestDenialsStayWithTheirSandbox: two daemons' managers with different
// pools (so their networks would derive the same log group) each hear only
// their own sandbox's refused packets.
func TestDenialsStayWithTheirSandbox(t *testing.T) {
	newPoolManager := func(tag, pool string) *sandboxnet.Manager {
		m, err := sandboxnet.New(sandboxnet.Config{Tag: fmt.Sprintf("%s%d", tag, os.Getpid()%10000), Pool: netip.MustParsePrefix(pool), Resolver: nettest.Resolver})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	newManager(t) // skips without root, fails without ip/nft
	nettest.New(t)
	a, da := create(t, newPoolManager("pa", "10.215.0.0/16"), api.NetworkPolicy{Policy: api.NetworkAllow})
	b, db := create(t, newPoolManager("pb", "10.216.0.0/16"), api.NetworkPolicy{Policy: api.NetworkAllow})
	wantRefused(t, probe(t, a, nil, "tcp", nettest.Metadata, 81))
	wantRefused(t, probe(t, b, nil, "tcp", nettest.Metadata, 82))
	da.WaitPacket(t, "tcp", nettest.Metadata, 81, "")
	db.WaitPacket(t, "tcp", nettest.Metadata, 82, "")
	if da.HasPacket("tcp", nettest.Metadata, 82, "") || db.HasPacket("tcp", nettest.Metadata, 81, "") {
		t.Errorf("a sandbox was told of the other's packets: a %s, b %s", da, db)
	}
}
