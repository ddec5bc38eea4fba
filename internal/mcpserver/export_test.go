package mcpserver

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ServeTransport serves one session on t (the tests' in-memory transport).
func (s *Server) ServeTransport(ctx context.Context, t mcp.Transport) error { return s.serve(ctx, t) }
