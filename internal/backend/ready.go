package backend

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
)

// ErrExited is returned by WaitReady when the sandbox stopped before its agent
// answered.
var ErrExited = errors.New("the sandbox exited before its agent answered")

// WaitReady polls the agent's socket until the agent answers /health, the
// sandbox stops (done closes), timeout passes or ctx ends. Every backend's
// Create ends with it.
//
// Its own timeout passing is an api.ErrTimeout (the manager retries such a
// start once); the caller's ctx ending is ctx's error.
func WaitReady(parent context.Context, sock string, done <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	c := agentclient.NewClient(sock)
	defer c.Close()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			hctx, hcancel := context.WithTimeout(ctx, time.Second)
			err := c.Health(hctx)
			hcancel()
			if err == nil {
				return nil
			}
		}
		select {
		case <-done:
			return ErrExited
		case <-ctx.Done():
			if parent.Err() == nil {
				return api.Errorf(api.ErrTimeout, "the sandbox's agent did not answer within %s; the machine may be overloaded", timeout)
			}
			return parent.Err()
		case <-tick.C:
		}
	}
}
