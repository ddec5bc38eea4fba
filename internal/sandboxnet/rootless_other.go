//go:build !linux

package sandboxnet

import (
	"context"
	"errors"
)

// open needs Linux's netlink and SCM_RIGHTS.
func (u *userNet) open(context.Context, *sockets, func(msg string, args ...any)) error {
	return errors.ErrUnsupported
}
