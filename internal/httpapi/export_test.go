package httpapi

import "github.com/ds-sandbox/ds-sandbox/internal/manager"

// Patterns lists the routes a server over m registers.
func Patterns(m *manager.Manager) []string {
	s, err := New(m, Options{Loopback: true})
	if err != nil {
		panic(err)
	}
	return s.patterns
}
