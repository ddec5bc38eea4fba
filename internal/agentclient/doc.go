// Package agentclient speaks the in-sandbox agent's protocol (HTTP/1.1 with
// JSON bodies and NDJSON streams, errors as api.Error; the routes are listed
// in package agent's doc) for the manager, the backends (WaitReady), the
// daemon's faces and the SDK. It imports only api and the standard library,
// so a program that only talks to an agent or a daemon links no agent
// server, no engine and no ZeroMQ.
//
// Client works on the agent's unix socket (NewClient) or on any base URL that
// serves the same routes, such as the daemon's /v1/sandboxes/{id} (NewHTTPClient).
package agentclient
