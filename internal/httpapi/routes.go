package httpapi

import (
	"net/http"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func (s *Server) routes() {
	open := routeOpts{open: true}
	// Anything no route matches (including a known path with the wrong
	// method) gets the one error shape, not the mux's plain text.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, api.Errorf(api.ErrNotFound, "no route %s %s (see /v1/openapi.json)", r.Method, r.URL.Path))
	})
	s.handle("GET /healthz", open, s.healthz)
	s.handle("GET /readyz", open, s.readyz)
	s.handle("GET /v1/openapi.json", open, serveOpenAPI)
	if s.opt.Metrics != nil {
		s.handle("GET /metrics", routeOpts{}, func(w http.ResponseWriter, r *http.Request) error {
			if !s.m.CanReadMetrics(r.Context()) {
				return api.Errorf(api.ErrPermission, "/metrics covers every key's sandboxes: it needs an admin key or one with metrics: true (api_keys[].metrics)")
			}
			s.opt.Metrics.Handler().ServeHTTP(w, r)
			return nil
		})
	}
	if s.opt.MCP != nil {
		// Tool calls are audited by the MCP server itself, each with its
		// own action (sandbox.create, code.execute, …), and each counts
		// as a stream of its key while it runs (it outlives its request).
		s.handle("/mcp", routeOpts{}, func(w http.ResponseWriter, r *http.Request) error {
			s.opt.MCP.ServeHTTP(w, r)
			return nil
		})
	}

	// Sandboxes.
	s.handle("POST /v1/sandboxes", routeOpts{action: "sandbox.create"}, s.createSandbox)
	s.handle("GET /v1/sandboxes", routeOpts{}, s.listSandboxes)
	s.handle("GET /v1/sandboxes/{id}", routeOpts{}, s.getSandbox)
	s.handle("POST /v1/sandboxes/{id}/connect", routeOpts{action: "sandbox.connect"}, s.getSandbox)
	s.handle("POST /v1/sandboxes/{id}/timeout", routeOpts{action: "sandbox.timeout"}, s.setTimeout)
	s.handle("PUT /v1/sandboxes/{id}/network", routeOpts{action: "sandbox.network"}, s.setNetwork)
	s.handle("DELETE /v1/sandboxes/{id}", routeOpts{action: "sandbox.kill"}, s.killSandbox)
	s.handle("GET /v1/sandboxes/{id}/events", routeOpts{}, s.sandboxEvents)
	s.handle("POST /v1/sandboxes/{id}/datasets", routeOpts{action: "dataset.prepare"}, s.prepareDataset)
	s.handle("POST /v1/sandboxes/{id}/execute", routeOpts{action: "code.execute", stream: true}, s.execute)

	// The agent's own routes, proxied into the sandbox.
	for _, p := range []struct {
		pattern, action string
		stream          bool
	}{
		{"POST /v1/sandboxes/{id}/contexts", "context.create", false},
		{"GET /v1/sandboxes/{id}/contexts", "", false},
		{"POST /v1/sandboxes/{id}/contexts/{cid}/restart", "context.restart", false},
		{"DELETE /v1/sandboxes/{id}/contexts/{cid}", "context.delete", false},
		{"GET /v1/sandboxes/{id}/files", "files.read", true},
		{"PUT /v1/sandboxes/{id}/files", "files.write", false},
		{"DELETE /v1/sandboxes/{id}/files", "files.remove", false},
		{"GET /v1/sandboxes/{id}/files/stat", "", false},
		{"GET /v1/sandboxes/{id}/files/list", "", false},
		{"POST /v1/sandboxes/{id}/files/mkdir", "files.mkdir", false},
		{"POST /v1/sandboxes/{id}/files/rename", "files.rename", false},
		{"GET /v1/sandboxes/{id}/files/watch", "files.watch", true},
		{"POST /v1/sandboxes/{id}/processes", "command.run", true},
		{"GET /v1/sandboxes/{id}/processes", "", false},
		{"GET /v1/sandboxes/{id}/processes/{pid}/stream", "command.connect", true},
		{"POST /v1/sandboxes/{id}/processes/{pid}/stdin", "command.stdin", false},
		{"POST /v1/sandboxes/{id}/processes/{pid}/signal", "command.signal", false},
	} {
		s.handle(p.pattern, routeOpts{action: p.action, stream: p.stream}, s.proxy)
	}

	// Server-wide resources.
	s.handle("GET /v1/events", routeOpts{}, s.events)
	s.handle("GET /v1/templates", routeOpts{}, s.listTemplates)
	s.handle("GET /v1/templates/{id}", routeOpts{}, s.getTemplate)
	s.handle("PUT /v1/templates/{id}", routeOpts{action: "template.save", admin: true}, s.putTemplate)
	s.handle("DELETE /v1/templates/{id}", routeOpts{action: "template.delete", admin: true}, s.deleteTemplate)
	// Workspaces and datasets belong to the key that made them; the
	// manager decides who sees what (admins: everything).
	s.handle("GET /v1/workspaces", routeOpts{}, s.listWorkspaces)
	s.handle("GET /v1/workspaces/{id}", routeOpts{}, s.getWorkspace)
	s.handle("DELETE /v1/workspaces/{id}", routeOpts{action: "workspace.delete"}, s.deleteWorkspace)
	s.handle("PUT /v1/workspaces/{id}/grants/{key}", routeOpts{action: "workspace.grant", admin: true}, s.grantWorkspace)
	s.handle("DELETE /v1/workspaces/{id}/grants/{key}", routeOpts{action: "workspace.revoke", admin: true}, s.grantWorkspace)
	s.handle("GET /v1/datasets", routeOpts{}, s.listDatasets)
	s.handle("GET /v1/datasets/{name}", routeOpts{}, s.getDataset)
	s.handle("POST /v1/datasets", routeOpts{action: "dataset.register", admin: true}, s.registerDataset)
	s.handle("PUT /v1/datasets/{name}", routeOpts{action: "dataset.upload"}, s.uploadDataset)
	s.handle("DELETE /v1/datasets/{name}", routeOpts{action: "dataset.delete"}, s.deleteDataset)
	s.handle("PUT /v1/datasets/{name}/public", routeOpts{action: "dataset.publish", admin: true}, s.publishDataset)
	s.handle("DELETE /v1/datasets/{name}/public", routeOpts{action: "dataset.unpublish", admin: true}, s.publishDataset)
}
