package backend

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// NetworkChecker is a Backend that can say, before any Create, whether it
// can enforce a network policy (allow, deny, whitelist) on this host: nil,
// or an error saying why not. Choose uses it so that default_backend auto
// never picks a backend that would refuse every create under the
// configured default policy.
type NetworkChecker interface {
	CheckNetwork(policy string) error
}

// Isolator is a Backend that says whether its sandboxes are isolated from
// the host at all. A Backend that does not implement it isolates; local
// answers false (its code runs as the daemon's user on the host).
type Isolator interface {
	Isolates() bool
}

// Isolates reports whether b isolates its sandboxes from the host.
func Isolates(b Backend) bool {
	i, ok := b.(Isolator)
	return !ok || i.Isolates()
}

// AutoOrder is the order in which Choose tries backends, strongest first:
// oci (runc as root, or rootless), docker, then local, which isolates
// nothing.
var AutoOrder = []string{"oci", "docker", "local"}

// Choice is how the default backend was chosen: by default_backend auto
// (Choose) or named by the configuration.
type Choice struct {
	// Name is the chosen backend.
	Name string `json:"name"`
	// Auto is set when default_backend auto chose it.
	Auto bool `json:"auto"`
	// Isolated is false when the chosen backend isolates nothing (local).
	Isolated bool `json:"isolated"`
	// Reason says why it was chosen.
	Reason string `json:"reason"`
	// Skipped maps each stronger backend auto passed over to why.
	Skipped map[string]string `json:"skipped,omitempty"`
}

// Warning is the one line to show on every start when the chosen backend
// does not isolate code, or "".
func (c Choice) Warning() string {
	if c.Isolated || c.Name == "" {
		return ""
	}
	why := "default_backend is " + c.Name
	if c.Auto {
		why = "default_backend auto found no isolating backend (run `ds-sandbox doctor`)"
	}
	return fmt.Sprintf("WARNING: sandboxes run on the %s backend: code is NOT isolated, it runs on the host as your user (%s); use only for trusted code", c.Name, why)
}

// Choose picks, in AutoOrder, the first backend of bs that is available on
// this host and can enforce the default network policy network; backends
// not in AutoOrder come last, in the order given. When none qualifies the
// Choice has an empty Name and Reason says why each was skipped.
func Choose(ctx context.Context, bs []Backend, network string) Choice {
	ordered := slices.Clone(bs)
	rank := func(b Backend) int {
		if i := slices.Index(AutoOrder, b.Name()); i >= 0 {
			return i
		}
		return len(AutoOrder)
	}
	slices.SortStableFunc(ordered, func(a, b Backend) int { return rank(a) - rank(b) })
	c := Choice{Auto: true, Skipped: map[string]string{}}
	for _, b := range ordered {
		if err := b.Available(ctx); err != nil {
			c.Skipped[b.Name()] = err.Error()
			continue
		}
		if nc, ok := b.(NetworkChecker); ok && network != "" {
			if err := nc.CheckNetwork(network); err != nil {
				c.Skipped[b.Name()] = fmt.Sprintf("cannot enforce the default network policy %q here: %v", network, err)
				continue
			}
		}
		c.Name, c.Isolated = b.Name(), Isolates(b)
		c.Reason = "default_backend auto: " + b.Name() + " is the strongest backend available here"
		if len(c.Skipped) > 0 {
			c.Reason += " (unusable: " + strings.Join(slices.Sorted(maps.Keys(c.Skipped)), ", ") + ")"
		}
		if !c.Isolated {
			c.Reason += "; it does not isolate code"
		}
		return c
	}
	var why []string
	for _, b := range ordered {
		why = append(why, b.Name()+": "+c.Skipped[b.Name()])
	}
	c.Reason = "default_backend auto: no backend can run sandboxes here (" + strings.Join(why, "; ") + ")"
	return c
}
