// Package backendset is the set of isolation backends this build has,
// assembled from the configuration. It is the one place that knows every
// backend package.
package backendset

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/docker"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/local"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/oci"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
)

// Mode says who runs the sandboxes.
type Mode int

const (
	// Embedded sandboxes die with the program that made them.
	Embedded Mode = iota
	// Daemon sandboxes outlive a daemon restart, so it can re-attach.
	Daemon
)

// New returns every backend this build has, configured from cfg.
func New(cfg config.Config, mode Mode) []backend.Backend {
	// Validated with the config: a bad value here is the zero one (defaults).
	pool, _ := netip.ParsePrefix(cfg.NetworkPool)
	resolver := Resolver(cfg.NetworkDNS)
	bs := []backend.Backend{
		local.New(local.Config{
			AgentPath: cfg.AgentPath,
			CacheDir:  filepath.Join(cfg.StateDir, "cache"),
			Detach:    mode == Daemon,
		}),
		// Containers outlive the daemon in both modes; the manager destroys
		// embedded-mode sandboxes when it closes.
		oci.New(oci.Config{
			AgentPath: cfg.AgentPath,
			Runtime:   cfg.OCIRuntime,
			StateDir:  filepath.Join(cfg.StateDir, "oci"),
			NetPool:   pool,
			Resolver:  resolver,
		}),
	}
	if docker.Present(cfg.AgentPath) {
		bs = append(bs, docker.New(docker.Config{
			AgentPath: cfg.AgentPath,
			StateDir:  filepath.Join(cfg.StateDir, "docker"),
			Embedded:  mode == Embedded,
			NetPool:   pool,
			Resolver:  resolver,
		}))
	}
	return bs
}

// Resolver returns the resolver of sandbox networks: one asking the DNS
// server dns (a network_dns value), or nil (the host's resolver) for "".
func Resolver(dns string) func(ctx context.Context, host string) ([]netip.Addr, error) {
	server, err := config.DNSServer(dns)
	if dns == "" || err != nil {
		return nil
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server.String())
	}}
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		return r.LookupNetIP(ctx, "ip", host)
	}
}
