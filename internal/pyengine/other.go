//go:build !linux

package pyengine

import (
	"context"
	"errors"
	"os"
)

// Start is unsupported outside Linux (pidfds, SCM_RIGHTS, setns).
func Start(context.Context, Config) (*Engine, error) { return nil, errors.ErrUnsupported }

// Zygote is unsupported outside Linux.
type Zygote struct{}

// StartZygote is unsupported outside Linux.
func StartZygote(context.Context, ZygoteConfig) (*Zygote, error) { return nil, errors.ErrUnsupported }

// Fork is unsupported outside Linux.
func (z *Zygote) Fork(context.Context, ForkConfig) (*Engine, error) {
	return nil, errors.ErrUnsupported
}

// Done is unsupported outside Linux.
func (z *Zygote) Done() <-chan struct{} { return nil }

// Close is unsupported outside Linux.
func (z *Zygote) Close() error { return errors.ErrUnsupported }

// PID is unsupported outside Linux.
func (z *Zygote) PID() int { return 0 }

// ForkConn needs Linux.
func (z *Zygote) ForkConn(context.Context, ForkConfig) (*os.File, int, error) {
	return nil, 0, errors.ErrUnsupported
}

// Attach needs Linux.
func Attach(_ context.Context, f *os.File, _ ForkConfig) (*Engine, error) {
	f.Close()
	return nil, errors.ErrUnsupported
}
