package agentclient

import (
	"context"
	"net/http"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// SetEnv sets environment variables for the rest of the sandbox's life: in
// every running code context's os.environ, and in the kernels and commands
// started later (see api.SetEnvRequest).
func (c *Client) SetEnv(ctx context.Context, envs map[string]string) error {
	return c.do(ctx, http.MethodPost, "/env", nil, api.SetEnvRequest{Envs: envs}, nil)
}
