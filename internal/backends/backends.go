// Package backends assembles the isolation backends of this build from the
// configuration. It is the one place that knows every backend package.
package backends

import (
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
		}),
	}
	if docker.Present(cfg.AgentPath) {
		bs = append(bs, docker.New(docker.Config{
			AgentPath: cfg.AgentPath,
			StateDir:  filepath.Join(cfg.StateDir, "docker"),
			Embedded:  mode == Embedded,
		}))
	}
	return bs
}
