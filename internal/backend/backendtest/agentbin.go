package backendtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildStaticAgent builds a statically linked ds-sandbox (CGO_ENABLED=0) in
// a new directory readable by everyone (a container's init, in a user
// namespace, must reach it) and returns its path and a cleanup that removes
// it. Container backends bind-mount it as the agent: it must run with only
// the container's /usr.
func BuildStaticAgent() (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "dss-agent-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return "", nil, err
	}
	path = filepath.Join(dir, "ds-sandbox")
	cmd := exec.Command("go", "build", "-o", path, "github.com/ds-sandbox/ds-sandbox/cmd/ds-sandbox")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build the agent: %w\n%s", err, out)
	}
	return path, cleanup, nil
}
