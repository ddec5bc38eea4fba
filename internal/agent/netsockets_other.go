//go:build !linux

package agent

import (
	"fmt"
	"io"
)

// netSocketsMain needs Linux namespaces.
func netSocketsMain(_ []string, stderr io.Writer) int {
	fmt.Fprintln(stderr, "agent net-sockets: needs Linux")
	return 1
}
