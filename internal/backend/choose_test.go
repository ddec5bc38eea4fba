package backend_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// stub is a backend whose availability and network abilities are given;
// Choose only asks those questions.
type stub struct {
	name     string
	avail    error
	network  map[string]error // nil: no NetworkChecker answer needed
	isolates bool
}

func (s stub) Name() string                     { return s.name }
func (s stub) Available(context.Context) error  { return s.avail }
func (s stub) Isolates() bool                   { return s.isolates }
func (s stub) CheckNetwork(policy string) error { return s.network[policy] }
func (stub) Create(context.Context, backend.Spec) (backend.Instance, error) {
	return nil, errors.ErrUnsupported
}

func TestChoose(t *testing.T) {
	t.Parallel()
	local := stub{name: "local", network: map[string]error{"deny": errors.New("local cannot deny")}}
	oci := stub{name: "oci", isolates: true}
	noRunc := stub{name: "oci", isolates: true, avail: errors.New("runc is not installed")}
	rootless := stub{name: "oci", isolates: true, network: map[string]error{"allow": errors.New("rootless: deny only")}}
	docker := stub{name: "docker", isolates: true}
	for _, tt := range []struct {
		name     string
		bs       []backend.Backend
		network  string
		want     string
		isolated bool
		skipped  []string
	}{
		{"oci first, whatever the order given", []backend.Backend{local, docker, oci}, "allow", "oci", true, nil},
		{"docker without runc", []backend.Backend{local, noRunc, docker}, "allow", "docker", true, []string{"oci"}},
		{"local last", []backend.Backend{local, noRunc}, "allow", "local", false, []string{"oci"}},
		{"not a backend that refuses the default network", []backend.Backend{local, rootless}, "allow", "local", false, []string{"oci"}},
		{"rootless oci under deny", []backend.Backend{local, rootless}, "deny", "oci", true, nil},
		{"nothing", []backend.Backend{local, noRunc}, "deny", "", false, []string{"local", "oci"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := backend.Choose(t.Context(), tt.bs, tt.network)
			if c.Name != tt.want || !c.Auto || c.Isolated != tt.isolated || len(c.Skipped) != len(tt.skipped) {
				t.Fatalf("Choose = %+v, want %s (isolated %v) skipping %v", c, tt.want, tt.isolated, tt.skipped)
			}
			for _, s := range tt.skipped {
				if c.Skipped[s] == "" || !strings.Contains(c.Reason, s) {
					t.Errorf("%s skipped without a reason: %+v", s, c)
				}
			}
			if w := c.Warning(); (w != "") != (tt.want == "local") || (w != "" && !strings.Contains(w, "NOT isolated")) {
				t.Errorf("warning %q for %s", w, tt.want)
			}
		})
	}
}
