package dssandbox

import (
	"context"

	"github.com/ds-sandbox/ds-sandbox/client"
	"github.com/ds-sandbox/ds-sandbox/internal/sdkcp"
)

// DatasetFilter narrows ListDatasets; zero fields match everything.
type DatasetFilter = client.DatasetFilter

// RegisterDataset registers a file or directory (a host path) once under name,
// recording its description, tags, sha256 and format. Sandboxes then get it
// with Sandbox.PrepareDataset.
func RegisterDataset(ctx context.Context, source, name, description string, tags []string) (Dataset, error) {
	cp, err := defaultControlPlane()
	if err != nil {
		return Dataset{}, err
	}
	return cp.RegisterDataset(ctx, source, name, description, tags)
}

// ListDatasets lists registered datasets, sorted by name.
func ListDatasets(ctx context.Context, f DatasetFilter) ([]Dataset, error) {
	cp, err := defaultControlPlane()
	if err != nil {
		return nil, err
	}
	return cp.ListDatasets(ctx, sdkcp.DatasetFilter(f))
}

// RemoveDataset removes a dataset from the registry (copies already prepared
// into workspaces stay).
func RemoveDataset(ctx context.Context, name string) error {
	cp, err := defaultControlPlane()
	if err != nil {
		return err
	}
	return cp.RemoveDataset(ctx, name)
}
