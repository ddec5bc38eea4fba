package mcpserver

import (
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// TestExecutionContentNamesDenials: a model is told what the network policy
// refused during its code, not only that a connection failed.
func TestExecutionContentNamesDenials(t *testing.T) {
	exec := &api.Execution{NetworkDenials: []api.NetworkDenial{
		{Host: "other.test", Reason: "not in the whitelist"},
		{IP: "169.254.169.254", Port: 80, Protocol: "tcp", Reason: "a link-local (metadata) address"},
	}}
	content, failed := executionContent(exec)
	if failed {
		t.Error("denials alone marked the execution failed")
	}
	var all strings.Builder
	for _, c := range content {
		if tc, ok := c.(*mcp.TextContent); ok {
			all.WriteString(tc.Text + "\n")
		}
	}
	for _, want := range []string{"[network policy] 2 refused", "other.test: not in the whitelist", "tcp to 169.254.169.254:80: a link-local (metadata) address"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("content lacks %q:\n%s", want, all.String())
		}
	}
}
