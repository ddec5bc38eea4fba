// Package testenv decides what a test does when something it needs from the
// machine is missing (ipykernel, root, a Docker daemon, an OCI runtime):
// locally it skips with the reason, so `go test ./...` works on a laptop;
// under CI (the CI variable set, as CI systems and .ci/run do) it fails,
// because CI provides the environment (scripts/install-deps.sh) and a test
// that skips there proves nothing.
//
// Only missing environment goes through here. A test that does not apply by
// design (a rootless-only check run as root, a known gap) skips with
// testing.T.Skip as before.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Python is the interpreter the tests run kernels with: Debian's, never the
// python3 first on PATH (it may be a pyenv shim without ipykernel).
const Python = "/usr/bin/python3"

// CI reports whether the tests run under CI: the CI variable is set to
// anything but "", "0" or "false" (CI systems set CI=true).
func CI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "", "0", "false":
		return false
	}
	return true
}

// Require skips tb, or fails it under CI, unless ok: what names the need
// ("root", "a Docker daemon"), why says what is missing and how to get it.
func Require(tb testing.TB, what string, ok bool, why string) {
	tb.Helper()
	if ok {
		return
	}
	msg := "needs " + what
	if why != "" {
		msg += ": " + why
	}
	if CI() {
		tb.Fatal(msg + " (CI is set: there the set-up must provide it)")
	}
	tb.Skip(msg)
}

// RequireNoError is Require with the reason an error: ok when err is nil.
func RequireNoError(tb testing.TB, what string, err error) {
	tb.Helper()
	if err != nil {
		Require(tb, what, false, err.Error())
	}
}

// RequireRoot needs the tests to run as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	Require(tb, "root", os.Geteuid() == 0, "run the tests as root")
}

var (
	pythonOnce sync.Once
	pythonErr  error
)

// PythonErr returns why Python cannot run kernels (it cannot import
// ipykernel), or nil. The check runs once per process.
func PythonErr() error {
	pythonOnce.Do(func() {
		out, err := exec.Command(Python, "-c", "import ipykernel").CombinedOutput()
		if err != nil {
			if s := strings.TrimSpace(string(out)); s != "" {
				err = fmt.Errorf("%w: %s", err, s)
			}
			pythonErr = fmt.Errorf("%s cannot import ipykernel (%v); run scripts/install-deps.sh", Python, err)
		}
	})
	return pythonErr
}

// RequirePython needs Python with ipykernel.
func RequirePython(tb testing.TB) {
	tb.Helper()
	RequireNoError(tb, "Python with ipykernel", PythonErr())
}

// MainRequire is Require for a TestMain whose every test needs what: when
// err is not nil it prints the reason and exits, with status 0 locally (the
// package's tests are skipped) and 1 under CI. It returns when err is nil.
func MainRequire(what string, err error) {
	if err == nil {
		return
	}
	if CI() {
		fmt.Fprintf(os.Stderr, "FAIL: needs %s: %v (CI is set: there the set-up must provide it)\n", what, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "SKIP: every test here needs %s: %v\n", what, err)
	os.Exit(0)
}

// MainRequirePython is MainRequire for Python with ipykernel.
func MainRequirePython() { MainRequire("Python with ipykernel", PythonErr()) }
