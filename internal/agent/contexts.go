package agent

// STUB: being written.

type contextTable struct{}

func newContextTable(_ *Config, _ *FS) *contextTable { return &contextTable{} }
func (c *contextTable) startDefault()                {}
func (c *contextTable) closeAll()                    {}
func (s *Server) registerContextRoutes()             {}
