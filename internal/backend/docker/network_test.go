package docker_test

import (
	"os"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/docker"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet/nettest"
)

// The network attacks against docker sandboxes with a network of ours (the
// same enforcement as oci's; see internal/backend/oci/network_test.go).

func probe(t *testing.T, c *agentclient.Client, kind string, args ...any) string {
	t.Helper()
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: nettest.ProbeCode(kind, args...)}, nil)
	if err != nil || e.Error != nil {
		t.Fatalf("probe %s %v: %v %+v", kind, args, err, e)
	}
	return strings.TrimSpace(strings.Join(e.Logs.Stdout, ""))
}

func want(t *testing.T, got string, ok bool, contains string) {
	t.Helper()
	if ok && (!strings.HasPrefix(got, "OK") || !strings.Contains(got, contains)) {
		t.Errorf("want OK with %q, got %q", contains, got)
	}
	if !ok && !strings.HasPrefix(got, "ERR") {
		t.Errorf("want ERR, got %q", got)
	}
}

func netSandbox(t *testing.T, pol api.NetworkPolicy) (backend.Instance, *agentclient.Client) {
	t.Helper()
	b := docker.New(setup(t))
	s := spec(t)
	s.Network = pol
	inst, c := start(t, b, s)
	if _, ok := inst.(backend.Recoverable).State()["net_key"]; !ok {
		if os.Geteuid() == 0 {
			t.Fatal("as root next to a local dockerd, the sandbox did not get a network of ours (are ip and nft installed?)")
		}
		t.Skip("no network of ours without root: allow is Docker's bridge")
	}
	return inst, c
}

func TestNetworkAllow(t *testing.T) {
	nettest.New(t)
	inst, c := netSandbox(t, api.NetworkPolicy{Policy: api.NetworkAllow})
	port := nettest.HostService(t)

	want(t, probe(t, c, "http", "http://allowed.test/"), true, "hello from "+nettest.Public.String())
	want(t, probe(t, c, "tcp", nettest.Metadata, 80), false, "")
	want(t, probe(t, c, "tcp", nettest.Private, 80), false, "")
	want(t, probe(t, c, "dns", "rebind.test"), false, "")
	want(t, probe(t, c, "tcp", "172.17.0.1", port), false, "") // Docker's bridge gateway: the host
	// A per-execution change of policy.
	if err := inst.(backend.NetworkController).SetNetwork(t.Context(), api.NetworkPolicy{Policy: api.NetworkDeny}); err != nil {
		t.Fatal(err)
	}
	want(t, probe(t, c, "tcp", nettest.Public, 80), false, "")
}

func TestNetworkWhitelist(t *testing.T) {
	nettest.New(t)
	_, c := netSandbox(t, api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}})
	want(t, probe(t, c, "http", "http://allowed.test/"), true, "hello from "+nettest.Public.String())
	want(t, probe(t, c, "direct", "http://allowed.test/"), true, "hello from "+nettest.Public.String())
	want(t, probe(t, c, "http", "http://other.test/"), false, "")
	want(t, probe(t, c, "tls", nettest.Other, 443, "allowed.test"), false, "")
	want(t, probe(t, c, "host", nettest.Metadata, 80, "169.254.169.254"), false, "")
	want(t, probe(t, c, "udp", nettest.Public, nettest.UDPEchoPort), false, "")
}
