package testenv_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// childEnv makes the test binary a child that runs one helper below.
const childEnv = "TESTENV_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "main" {
		testenv.MainRequire("a thing", errors.New("it is missing"))
		os.Exit(3) // not reached
	}
	os.Exit(m.Run())
}

// TestRequireChild is the child's test for Require (skipped otherwise).
func TestRequireChild(t *testing.T) {
	if os.Getenv(childEnv) != "require" {
		t.Skip("a helper run by TestRequire")
	}
	testenv.Require(t, "a thing", false, "it is missing")
	t.Log("not reached")
}

// run runs the test binary as a child with CI set to ci.
func run(t *testing.T, child, ci string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"="+child, "CI="+ci)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

func TestRequire(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ci   string
		code int
		want string
	}{
		{ci: "", code: 0, want: "--- SKIP: TestRequireChild"},
		{ci: "false", code: 0, want: "--- SKIP: TestRequireChild"},
		{ci: "true", code: 1, want: "--- FAIL: TestRequireChild"},
		{ci: "1", code: 1, want: "--- FAIL: TestRequireChild"},
	}
	for _, c := range cases {
		t.Run("CI="+c.ci, func(t *testing.T) {
			t.Parallel()
			code, out := run(t, "require", c.ci, "-test.run=^TestRequireChild$", "-test.v")
			if code != c.code || !strings.Contains(out, c.want) || !strings.Contains(out, "needs a thing: it is missing") || strings.Contains(out, "not reached") {
				t.Errorf("exit %d, want %d with %q and the reason; output:\n%s", code, c.code, c.want, out)
			}
		})
	}
}

func TestMainRequire(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ci   string
		code int
		want string
	}{
		{ci: "", code: 0, want: "SKIP: every test here needs a thing: it is missing"},
		{ci: "true", code: 1, want: "FAIL: needs a thing: it is missing"},
	}
	for _, c := range cases {
		t.Run("CI="+c.ci, func(t *testing.T) {
			t.Parallel()
			code, out := run(t, "main", c.ci)
			if code != c.code || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, want %d with %q; output:\n%s", code, c.code, c.want, out)
			}
		})
	}
}
