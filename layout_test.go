package dssandbox_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection enforces the layering of docs/ARCHITECTURE.md:
// cmd → cli → daemon → (daemon faces) → SDK/manager → backend → agent → jupyter, with
// api and the leaf stores importing nothing of ours above them.
func TestDependencyDirection(t *testing.T) {
	t.Parallel()
	const mod = "github.com/ds-sandbox/ds-sandbox"
	out, err := exec.Command("go", "list", "-json", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	// forbidden[pkg] lists import prefixes (relative to the module) pkg must not use.
	above := []string{"internal/cli", "cmd/"}
	rules := []struct {
		pkg       string
		forbidden []string
		onlyOurs  []string // when set, the only packages of ours it may import
		self      bool     // the rule holds for pkg itself, not the packages below it
		importers []string // when set, the only packages of ours that may import it
	}{
		{pkg: "api", onlyOurs: []string{}},
		{pkg: "internal/procgroup", onlyOurs: []string{}},
		{pkg: "internal/jupyter", onlyOurs: []string{"internal/procgroup"}},
		{pkg: "internal/atomicfile", onlyOurs: []string{}},
		{pkg: "internal/seccompbpf", onlyOurs: []string{}},
		{pkg: "internal/workspace", onlyOurs: []string{"api", "internal/atomicfile"}},
		{pkg: "internal/dataset", onlyOurs: []string{"api", "internal/workspace", "internal/atomicfile"}},
		{pkg: "internal/template", onlyOurs: []string{"api", "internal/atomicfile"}},
		{pkg: "internal/config", onlyOurs: []string{"api", "internal/template", "internal/workspace", "internal/netpolicy"}},
		{pkg: "internal/netpolicy", onlyOurs: []string{"api"}},
		{pkg: "internal/scanner", onlyOurs: []string{"api"}},
		{pkg: "internal/egress", onlyOurs: []string{"api", "internal/netpolicy"}},
		// (nettest, under it, is a test helper: it may use testenv.)
		{pkg: "internal/sandboxnet", onlyOurs: []string{"api", "internal/netpolicy", "internal/egress", "internal/sandboxnet/nettest", "internal/testenv"}},
		{pkg: "internal/eventstream", onlyOurs: []string{"api"}},
		{pkg: "internal/httpjson", onlyOurs: []string{}},
		{pkg: "internal/pyengine", onlyOurs: []string{"internal/jupyter", "internal/procgroup"}},
		{pkg: "internal/agent", onlyOurs: []string{"api", "internal/jupyter", "internal/pyengine", "internal/procgroup", "internal/eventstream", "internal/httpjson"}},
		{pkg: "internal/agentclient", onlyOurs: []string{"api", "internal/eventstream"}},
		{pkg: "internal/backend", forbidden: append([]string{"internal/manager", "ROOT"}, above...)},
		// The backend interface reaches agents through the client only (the
		// backends below it start the agent's server, so they import it).
		{pkg: "internal/backend", self: true, forbidden: []string{"internal/agent"}},
		{pkg: "internal/auth", onlyOurs: []string{}},
		{pkg: "internal/testenv", onlyOurs: []string{}},
		{pkg: "internal/manager", forbidden: append([]string{"ROOT", "internal/httpapi", "internal/mcpserver"}, above...)},
		{pkg: "internal/httpapi", forbidden: append([]string{"ROOT", "internal/mcpserver", "internal/e2b"}, above...)},
		{pkg: "internal/e2b", forbidden: append([]string{"ROOT", "internal/httpapi", "internal/mcpserver"}, above...)},
		{pkg: "internal/enginehost", forbidden: append([]string{"ROOT", "internal/manager", "internal/httpapi"}, above...)},
		{pkg: "internal/imagebuild", forbidden: append([]string{"ROOT", "internal/manager", "internal/httpapi"}, above...)},
		{pkg: "internal/mcpserver", forbidden: append([]string{"ROOT", "internal/httpapi"}, above...)},
		// The remote-only SDK: the root package (embedded mode) builds on it, never the reverse.
		{pkg: "internal/sdkcp", onlyOurs: []string{"api", "internal/agentclient"}},
		{pkg: "client", onlyOurs: []string{"api", "internal/agentclient", "internal/sdkcp"}},
		{pkg: "examples/remote", onlyOurs: []string{"client"}},
		// The one place that knows every backend: the programs that run
		// sandboxes (embedded SDK, CLI, daemon) pick it, nothing below them.
		{pkg: "internal/backendset", forbidden: append([]string{"ROOT", "internal/manager", "internal/httpapi", "internal/e2b", "internal/mcpserver"}, above...),
			importers: []string{"ROOT", "internal/cli", "internal/daemon"}},
		// The composition root of `serve`: it may wire everything below it,
		// and only the CLI (and tests) build it.
		{pkg: "internal/daemon", forbidden: append([]string{"ROOT"}, above...), importers: []string{"internal/cli"}},
		{pkg: "ROOT", forbidden: above},
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	importedBy := map[string][]string{} // package of ours → packages of ours importing it
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, mod), "/")
		if rel == "" {
			rel = "ROOT"
		}
		var ours []string
		for _, imp := range p.Imports {
			if imp == mod {
				ours = append(ours, "ROOT")
			} else if r, ok := strings.CutPrefix(imp, mod+"/"); ok {
				ours = append(ours, r)
			}
		}
		for _, imp := range ours {
			importedBy[imp] = append(importedBy[imp], rel)
		}
		// Backends never import one another.
		if b, ok := strings.CutPrefix(rel, "internal/backend/"); ok {
			name, _, _ := strings.Cut(b, "/")
			for _, imp := range ours {
				if o, ok := strings.CutPrefix(imp, "internal/backend/"); ok && !strings.HasPrefix(o, name) && o != "backendtest" {
					t.Errorf("backend %s imports backend %s", rel, imp)
				}
			}
		}
		for _, r := range rules {
			if rel != r.pkg && (r.self || !strings.HasPrefix(rel, r.pkg+"/")) || r.pkg == "ROOT" && rel != "ROOT" {
				continue
			}
			seen[r.pkg] = true
			for _, imp := range ours {
				if r.onlyOurs != nil && !contains(r.onlyOurs, imp) {
					t.Errorf("%s imports %s; it may only import %v of ours", rel, imp, r.onlyOurs)
				}
				for _, f := range r.forbidden {
					if imp == f || strings.HasPrefix(imp, strings.TrimSuffix(f, "/")+"/") {
						t.Errorf("%s imports %s, which is above it", rel, imp)
					}
				}
			}
		}
	}
	for _, r := range rules {
		if r.importers == nil {
			continue
		}
		for pkg, by := range importedBy {
			if !within(pkg, r.pkg) {
				continue
			}
			for _, b := range by {
				if !within(b, r.pkg) && !contains(r.importers, b) {
					t.Errorf("%s imports %s; only %v may", b, pkg, r.importers)
				}
			}
		}
	}
	for _, r := range rules {
		if !seen[r.pkg] {
			t.Errorf("no package %s: update the layering rules", r.pkg)
		}
	}
}

// TestRemoteOnlyProgram: a program that only talks to a server (package
// client, as examples/remote does) links none of the embedded mode — no
// manager, backends, agent server, engines, sandbox networking, ZeroMQ or
// Docker client.
func TestRemoteOnlyProgram(t *testing.T) {
	t.Parallel()
	const mod = "github.com/ds-sandbox/ds-sandbox"
	out, err := exec.Command("go", "list", "-deps", "./examples/remote").Output()
	if err != nil {
		t.Fatalf("go list -deps ./examples/remote: %v", err)
	}
	deps := strings.Fields(string(out))
	if !contains(deps, mod+"/client") {
		t.Fatalf("examples/remote does not use package client; its dependencies: %v", deps)
	}
	forbidden := []struct{ path, what string }{
		{mod + "/internal/backend", "the backends (and their assembly)"}, // a prefix: backend/…, backends, backendset
		{mod + "/internal/manager", "the manager"},
		{mod + "/internal/agent/", "the agent's server"},
		{mod + "/internal/jupyter", "the Jupyter client"},
		{mod + "/internal/pyengine", "the lean engine"},
		{mod + "/internal/sandboxnet", "sandbox networking"},
		{mod + "/internal/enginehost", "the daemon's zygotes"},
		{"github.com/go-zeromq/", "ZeroMQ"},
		{"github.com/docker/", "the Docker client"},
		{"github.com/moby/", "the Docker client"},
	}
	// Of our own packages, only these.
	ours := []string{"api", "client", "internal/agentclient", "internal/sdkcp", "internal/eventstream", "examples/remote"}
	for _, d := range deps {
		bad := false
		for _, f := range forbidden {
			if p, ok := strings.CutSuffix(f.path, "/"); ok && d == p || strings.HasPrefix(d, f.path) {
				t.Errorf("a remote-only program links %s (%s)", d, f.what)
				bad = true
			}
		}
		if rel, ok := strings.CutPrefix(d, mod+"/"); ok && !bad && !contains(ours, rel) {
			t.Errorf("a remote-only program links %s; only %v of ours are expected", d, ours)
		}
		if d == mod {
			t.Errorf("a remote-only program links the root package (embedded mode)")
		}
	}
}

// within reports whether rel is pkg or a package under it.
func within(rel, pkg string) bool { return rel == pkg || strings.HasPrefix(rel, pkg+"/") }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
