//go:build !linux

package agent

import "errors"

// bindWorkdir needs Linux mount namespaces.
func bindWorkdir(workdir, hostDir string) error { return errors.ErrUnsupported }

// dropPrivilegeAndReexec is never reached without bindWorkdir.
func dropPrivilegeAndReexec(string) error { return errors.ErrUnsupported }
