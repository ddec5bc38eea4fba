package oci_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/oci"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet/nettest"
)

// The network attacks of the security suite, from inside containers on the
// runtime under test (runc, or gVisor's netstack on the same veth; rootless,
// runc behind slirp4netns with the rules inside the container's namespace).
// The "internet" is nettest's namespace; nothing leaves the machine (run
// rootless, scripts/test-oci-rootless.sh serves it as root, see
// TestServeInternet).

// TestServeInternet is not a test: run as root with DSS_NETTEST_SERVE=FILE
// it serves nettest's Internet for tests run as another user until FILE is
// removed (see nettest.ExternalEnv).
func TestServeInternet(t *testing.T) {
	ready := os.Getenv("DSS_NETTEST_SERVE")
	if ready == "" {
		t.Skip("serves the stand-in internet for scripts/test-oci-rootless.sh")
	}
	nettest.Serve(t, ready)
}

// netSandbox starts a sandbox under pol and collects its denials.
func netSandbox(t *testing.T, b *oci.Backend, pol api.NetworkPolicy) (backend.Instance, *agentclient.Client, *nettest.Denials) {
	t.Helper()
	inst, c, _ := sandbox(t, b, func(s *backend.Spec) {
		s.Network = pol
		s.ID = fmt.Sprintf("net-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), time.Now().UnixNano()%1e6)
	})
	d := &nettest.Denials{}
	inst.(backend.NetworkController).OnNetworkDenial(d.Add)
	return inst, c, d
}

// probe runs nettest.Probe in the sandbox's kernel and returns its answer.
func probe(t *testing.T, c *agentclient.Client, kind string, args ...any) string {
	t.Helper()
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: nettest.ProbeCode(kind, args...)}, nil)
	if err != nil {
		t.Fatalf("probe %s %v: %v", kind, args, err)
	}
	if e.Error != nil {
		t.Fatalf("probe %s %v: %s: %s", kind, args, e.Error.Name, e.Error.Value)
	}
	return strings.TrimSpace(strings.Join(e.Logs.Stdout, ""))
}

func ok(t *testing.T, got, contains string) {
	t.Helper()
	if !strings.HasPrefix(got, "OK") || !strings.Contains(got, contains) {
		t.Errorf("want OK with %q, got %q", contains, got)
	}
}

func refused(t *testing.T, got string) {
	t.Helper()
	if !strings.HasPrefix(got, "ERR") {
		t.Errorf("want ERR, got %q", got)
	}
}

func TestNetworkAllow(t *testing.T) {
	b := newBackend(t)
	nettest.New(t)
	inst, c, d := netSandbox(t, b, api.NetworkPolicy{Policy: api.NetworkAllow})
	port := nettest.HostService(t)

	ok(t, probe(t, c, "dns", "allowed.test"), nettest.Public.String())
	ok(t, probe(t, c, "http", "http://allowed.test/"), "hello from "+nettest.Public.String())
	ok(t, probe(t, c, "tls", nettest.Other, 443, "anything.example"), "hello from "+nettest.Other.String())
	ok(t, probe(t, c, "udp", nettest.Public, nettest.UDPEchoPort), "ping")

	// The host reaches these (nettest routes them); the sandbox must not.
	refused(t, probe(t, c, "tcp", nettest.Metadata, 80))
	refused(t, probe(t, c, "tcp", nettest.Private, 80))
	// Refused packets are reported too (asynchronously, through netlink).
	d.WaitPacket(t, "tcp", nettest.Metadata, 80, "")
	d.WaitPacket(t, "tcp", nettest.Private, 80, "")
	refused(t, probe(t, c, "dns", "meta.test"))   // a name for the metadata address
	refused(t, probe(t, c, "dns", "rebind.test")) // a name for loopback
	// The host's services: on its loopback (the sandbox's is its own), on
	// the host end of the veth (root), on an address of the host that is
	// not special (nettest's end of its veth), and on the address that
	// leads slirp4netns to the host's loopback (rootless: disabled).
	refused(t, probe(t, c, "tcp", "127.0.0.1", port))
	if !rootless() {
		hostEnd := netip.MustParseAddr(inst.(backend.Recoverable).State()["net_addr"]).Prev()
		refused(t, probe(t, c, "tcp", hostEnd, port))
	}
	refused(t, probe(t, c, "tcp", nettest.HostEnd, port))
	d.WaitPacket(t, "tcp", nettest.HostEnd, port, "")
	refused(t, probe(t, c, "tcp", "10.0.2.2", port))
	// Another sandbox: a server in it, reachable from itself, not from here.
	_, other, _ := netSandbox(t, b, api.NetworkPolicy{Policy: api.NetworkAllow})
	if _, err := other.StartProcess(t.Context(), api.ProcessRequest{Cmd: "python3 -m http.server 8000 --bind 0.0.0.0"}); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSpace(mustSh(t, other, "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('203.0.113.10', 9)); print(s.getsockname()[0])\""))
	waitFor(t, func() bool { return strings.HasPrefix(probe(t, other, "tcp", "127.0.0.1", 8000), "OK") })
	refused(t, probe(t, c, "tcp", addr, 8000))
}

func TestNetworkWhitelist(t *testing.T) {
	b := newBackend(t)
	nettest.New(t)
	_, c, d := netSandbox(t, b, api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test", "*.wild.test", "rebind.test"}})
	port := nettest.HostService(t)

	// Through the proxy its environment names, and transparently.
	ok(t, probe(t, c, "http", "http://allowed.test/"), "hello from "+nettest.Public.String())
	ok(t, probe(t, c, "http", "http://x.wild.test/"), "hello from "+nettest.Public.String())
	ok(t, probe(t, c, "direct", "http://allowed.test/"), "hello from "+nettest.Public.String())
	ok(t, probe(t, c, "tls", nettest.Public, 443, "allowed.test"), "hello from "+nettest.Public.String())

	// Not listed: refused, and the caller is told.
	refused(t, probe(t, c, "http", "http://other.test/"))
	refused(t, probe(t, c, "dns", "other.test"))
	refused(t, probe(t, c, "host", nettest.Other, 80, "other.test"))
	if !d.Has("other.test", "") {
		t.Errorf("no denial reported for other.test: %s", d)
	}
	// SNI/Host mismatch: a listed name sent to an unlisted address.
	refused(t, probe(t, c, "tls", nettest.Other, 443, "allowed.test"))
	refused(t, probe(t, c, "host", nettest.Other, 80, "allowed.test"))
	// The metadata address, by IP, through the proxy and by a name.
	refused(t, probe(t, c, "host", nettest.Metadata, 80, "169.254.169.254"))
	refused(t, probe(t, c, "http", "http://169.254.169.254/latest/meta-data/"))
	// DNS rebinding: a listed name resolving to loopback.
	refused(t, probe(t, c, "http", "http://rebind.test/"))
	refused(t, probe(t, c, "dns", "rebind.test"))
	// UDP other than DNS, and the host's services.
	refused(t, probe(t, c, "udp", nettest.Public, nettest.UDPEchoPort))
	refused(t, probe(t, c, "http", fmt.Sprintf("http://127.0.0.1:%d/", port)))
	refused(t, probe(t, c, "host", nettest.HostEnd, port, "x"))
}

func TestNetworkSetPolicy(t *testing.T) {
	b := newBackend(t)
	nettest.New(t)
	inst, c, _ := netSandbox(t, b, api.NetworkPolicy{Policy: api.NetworkAllow})
	nc := inst.(backend.NetworkController)
	ctx := t.Context()
	ok(t, probe(t, c, "direct", "http://other.test/"), "hello from "+nettest.Other.String())

	if err := nc.SetNetwork(ctx, api.NetworkPolicy{Policy: api.NetworkDeny}); err != nil {
		t.Fatal(err)
	}
	refused(t, probe(t, c, "dns", "allowed.test"))
	refused(t, probe(t, c, "tcp", nettest.Public, 80))

	if err := nc.SetNetwork(ctx, api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}); err != nil {
		t.Fatal(err)
	}
	ok(t, probe(t, c, "direct", "http://allowed.test/"), "hello from "+nettest.Public.String())
	refused(t, probe(t, c, "host", nettest.Other, 80, "other.test"))

	if err := nc.SetNetwork(ctx, api.NetworkPolicy{Policy: api.NetworkAllow}); err != nil {
		t.Fatal(err)
	}
	ok(t, probe(t, c, "direct", "http://other.test/"), "hello from "+nettest.Other.String())

	// A deny sandbox has nothing to open.
	denyInst, _, _ := sandbox(t, b, nil)
	err := denyInst.(backend.NetworkController).SetNetwork(ctx, api.NetworkPolicy{Policy: api.NetworkAllow})
	if !errors.Is(err, api.ErrUnsupported) {
		t.Errorf("opening a deny sandbox: %v, want ErrUnsupported", err)
	}
}

func TestNetworkRecover(t *testing.T) {
	b := newBackend(t)
	nettest.New(t)
	pol := api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}
	inst, c, _ := netSandbox(t, b, pol)
	ok(t, probe(t, c, "direct", "http://allowed.test/"), "hello from")
	state := inst.(backend.Recoverable).State()
	inst.(backend.Detacher).Detach() // the daemon goes away

	// While no daemon runs, the rules still shut everything but the (now
	// absent) proxy and DNS server.
	refused(t, probe(t, c, "host", nettest.Other, 80, "other.test"))

	b2 := oci.New(b.Config())
	again, err := b2.Recover(t.Context(), state)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	defer again.Destroy(context.Background())
	ok(t, probe(t, c, "direct", "http://allowed.test/"), "hello from")
	refused(t, probe(t, c, "host", nettest.Other, 80, "other.test"))
	if err := again.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Recover(t.Context(), state); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Recover after Destroy: %v, want ErrNotFound", err)
	}
}

func mustSh(t *testing.T, c *agentclient.Client, cmd string) string {
	t.Helper()
	out, errs, code := sh(t, c, cmd)
	if code != 0 {
		t.Fatalf("%s: exit %d: %s", cmd, code, errs)
	}
	return out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 50 {
		if cond() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}
