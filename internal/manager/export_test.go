package manager

// CrashDetach detaches every sandbox, pooled ones included, as a daemon
// killed with SIGKILL leaves them: running, with their records.
func (m *Manager) CrashDetach() { m.detach(true) }
