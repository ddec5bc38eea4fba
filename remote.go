package dssandbox

import "github.com/ds-sandbox/ds-sandbox/client"

// Environment variables of remote mode.
const (
	// URLEnv names a ds-sandbox server; when set, the package-level functions
	// (Create, Connect, List, …) talk to it instead of running embedded.
	URLEnv = client.URLEnv
	// APIKeyEnv is the API key sent to that server.
	APIKeyEnv = client.APIKeyEnv
)

// Client talks to a ds-sandbox server (`ds-sandbox serve`): the same calls as
// the package-level functions, with the same behaviour, over the REST API.
// Programs that only ever talk to a server can use package client instead,
// which links none of the embedded mode.
type Client = client.Client

// NewClient returns a client of the server at serverURL, authenticating with
// apiKey ("" when the server has no keys).
func NewClient(serverURL, apiKey string) (*Client, error) { return client.NewClient(serverURL, apiKey) }
