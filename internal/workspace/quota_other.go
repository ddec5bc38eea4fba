//go:build !linux

package workspace

import "github.com/ds-sandbox/ds-sandbox/api"

// QuotaSupported: workspace disk quotas need Linux loop mounts.
func QuotaSupported() error { return quotaSupported() }

func quotaSupported() error {
	return api.Errorf(api.ErrUnsupported, "disk quotas for workspaces need Linux (a loop-mounted image)")
}

func makeImage(string, int) error     { return quotaSupported() }
func mountImage(string, string) error { return quotaSupported() }
func unmount(string) error            { return nil }
func isMountPoint(string) (bool, error) {
	return false, nil
}
