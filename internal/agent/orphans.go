package agent

import "sync"

// pidSet is a set of pids safe for concurrent use.
type pidSet struct {
	mu sync.Mutex
	m  map[int]bool
}

func (s *pidSet) add(pid int) {
	s.mu.Lock()
	s.m[pid] = true
	s.mu.Unlock()
}

func (s *pidSet) remove(pid int) {
	s.mu.Lock()
	delete(s.m, pid)
	s.mu.Unlock()
}

func (s *pidSet) has(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[pid]
}

// ownChild reports whether pid is a process the agent started and has not
// waited for yet (a command or a kernel): its exit status belongs to the code
// that waits for it, not to the orphan reaper.
func (s *Server) ownChild(pid int) bool {
	if s.ctxs.children.has(pid) {
		return true
	}
	t := s.procs
	t.mu.Lock()
	p, ok := t.procs[pid]
	t.mu.Unlock()
	if !ok {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.exited
}
