//go:build !linux

package backend

import "errors"

// OOMKills is Linux-only.
func OOMKills(pid int) (uint64, error) { return 0, errors.ErrUnsupported }
