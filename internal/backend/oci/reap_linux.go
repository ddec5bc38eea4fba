package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
)

var _ backend.Reaper = (*Backend)(nil)

// ReapOrphans implements backend.Reaper: every bundle of this backend whose
// sandbox the manager does not know (a daemon that died between starting it
// and recording it) is killed, deleted and removed. The bundles are ours
// alone: BundleDir is per state directory.
func (b *Backend) ReapOrphans(ctx context.Context, live func(sandboxID string) bool) (int, error) {
	entries, err := os.ReadDir(b.cfg.BundleDir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("oci backend: %w", err)
	}
	rt := b.runtime()
	n := 0
	var errs []error
	liveNets := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "s-") {
			continue
		}
		l := bundle{dir: filepath.Join(b.cfg.BundleDir, e.Name())}
		var sp specs.Spec
		data, err := os.ReadFile(l.config())
		if err == nil {
			err = json.Unmarshal(data, &sp)
		}
		sid, cid := sp.Annotations[annotationSandbox], sp.Annotations[annotationContainer]
		if err != nil || sid == "" || cid == "" {
			// A bundle whose config was never written: a Create that died.
			if info, ierr := e.Info(); ierr == nil && time.Since(info.ModTime()) > time.Minute {
				os.RemoveAll(l.dir)
			}
			continue
		}
		if live(sid) {
			liveNets[sandboxnet.KeyFor(cid)] = true
			continue
		}
		in := &instance{rt: rt, cid: cid, bundle: l, done: make(chan struct{})}
		if _, err := rt.state(ctx, cid); errors.Is(err, api.ErrNotFound) {
			close(in.done)
		} else if a, err := attach(ctx, rt, cid, l); err == nil {
			in = a
		} else {
			close(in.done)
		}
		if err := in.Destroy(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	// Networks whose container is gone (reaped above, or a Create that
	// died between making the network and the bundle's config). A rootless
	// network leaves nothing on the host: its rules die with the
	// container's namespace, its slirp4netns with the daemon.
	if !b.rootless && b.networkAvailable() == nil {
		if _, err := b.nets.Reap(ctx, func(key string) bool { return liveNets[key] }); err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}
