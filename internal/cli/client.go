package cli

import (
	"errors"
	"fmt"
	"os"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
	"github.com/ds-sandbox/ds-sandbox/api"
)

// defaultDaemonURL is where `ds-sandbox serve` listens unless told otherwise.
const defaultDaemonURL = "http://127.0.0.1:8000"

// daemonClient is the SDK's client of the daemon named by DS_SANDBOX_URL
// (the Python client and the SDK's remote mode read the same variables).
type daemonClient struct {
	*dssandbox.Client
	url string
}

func dialDaemon() (*daemonClient, error) {
	u := os.Getenv(dssandbox.URLEnv)
	if u == "" {
		u = defaultDaemonURL
	}
	c, err := dssandbox.NewClient(u, os.Getenv(dssandbox.APIKeyEnv))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dssandbox.URLEnv, err)
	}
	return &daemonClient{Client: c, url: u}, nil
}

// explain adds what to do to the errors a daemon client meets first: no
// daemon answering, or a key it does not take.
func (d *daemonClient) explain(err error) error {
	var ae *api.Error
	answered := errors.As(err, &ae)
	switch {
	case errors.Is(err, api.ErrUnavailable) && !answered:
		return fmt.Errorf("no ds-sandbox daemon answers at %s: start one with `ds-sandbox serve`, or set %s to the address of a running one (%w)",
			d.url, dssandbox.URLEnv, err)
	case errors.Is(err, api.ErrUnauthenticated):
		return fmt.Errorf("%w (set %s to a key the daemon at %s accepts)", err, dssandbox.APIKeyEnv, d.url)
	}
	return err
}
