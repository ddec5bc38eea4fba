//go:build !unix

package manager

import (
	"errors"
	"os"
)

func lockStateDir(string) (*os.File, error) {
	return nil, errors.ErrUnsupported
}
