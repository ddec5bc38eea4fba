//go:build !linux

package oci

import (
	"context"
	"errors"
	"fmt"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// Available implements backend.Backend: OCI runtimes run Linux containers.
func (b *Backend) Available(context.Context) error {
	return fmt.Errorf("the oci backend needs Linux: %w", errors.ErrUnsupported)
}

// Create implements backend.Backend.
func (b *Backend) Create(context.Context, backend.Spec) (backend.Instance, error) {
	return nil, fmt.Errorf("the oci backend needs Linux: %w", errors.ErrUnsupported)
}

func (b *Backend) rootlessEnforces() []string { return nil }

// CheckNetwork implements backend.NetworkChecker.
func (b *Backend) CheckNetwork(string) error {
	return fmt.Errorf("the oci backend needs Linux: %w", errors.ErrUnsupported)
}

// Recover implements backend.Recoverer: no container can run here.
func (b *Backend) Recover(context.Context, map[string]string) (backend.Instance, error) {
	return nil, fmt.Errorf("the oci backend needs Linux: %w", errors.ErrUnsupported)
}

// ReapOrphans implements backend.Reaper: no bundle can exist here, so there
// is nothing to reap.
func (b *Backend) ReapOrphans(context.Context, func(string) bool) (int, error) { return 0, nil }
