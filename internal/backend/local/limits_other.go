//go:build !linux

package local

import "github.com/ds-sandbox/ds-sandbox/api"

// checkOpenFiles: the agent sets open-file limits on Linux only.
func checkOpenFiles(n int) error {
	if n != 0 {
		return api.Errorf(api.ErrUnsupported, "the local backend sets max_open_files on Linux only")
	}
	return nil
}
