//go:build !unix

package procgroup

import "errors"

// Kill is unsupported without Unix process groups.
func Kill(int) error { return errors.ErrUnsupported }

func exists(int) bool { return false }
