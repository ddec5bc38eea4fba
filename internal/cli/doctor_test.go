package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDoctor: doctor names the default backend and why, and reports every
// backend of this build with what it enforces or why it is unusable.
func TestDoctor(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCLI(t, "", "doctor")
	if code != 0 {
		t.Fatalf("doctor: exit %d: %s", code, errOut)
	}
	// TestMain configures local (SANDBOX_DEFAULT_BACKEND), which isolates
	// nothing: doctor says so.
	for _, want := range []string{"default backend: local\n", "why: default_backend is local in the configuration", "code is NOT isolated", "\nlocal: available", "\noci: ",
		"\ndefault engine: ipykernel\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = runCLI(t, "", "doctor", "--json")
	if code != 0 {
		t.Fatalf("doctor --json: exit %d: %s", code, errOut)
	}
	var rep doctorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	if rep.Default.Name != "local" || rep.Default.Auto || rep.Default.Isolated || rep.Network != "allow" {
		t.Errorf("default: %+v, network %q", rep.Default, rep.Network)
	}
	if e := rep.Engine; e.Name != "ipykernel" || !e.Ready || e.Reason != "" || e.Preload != nil {
		t.Errorf("default engine: %+v", e)
	}
	names := map[string]doctorBackend{}
	for _, b := range rep.Backends {
		names[b.Name] = b
		if !b.Ready && b.Reason == "" {
			t.Errorf("%s is unavailable without a reason", b.Name)
		}
	}
	if l, ok := names["local"]; !ok || !l.Ready || l.Isolates || len(l.Enforces) == 0 {
		t.Errorf("local: %+v", l)
	}
	if o, ok := names["oci"]; !ok || !o.Isolates {
		t.Errorf("oci: %+v", o)
	}

	// The default engine is reported with its preload list.
	lean := filepath.Join(t.TempDir(), "lean.yaml")
	if err := os.WriteFile(lean, []byte("engine: lean\npreload: [numpy, matplotlib.pyplot]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI(t, "", "doctor", "--config", lean)
	const want = "\ndefault engine: lean (preload: numpy, matplotlib.pyplot)\n"
	if code != 0 || !strings.Contains(out, want) || strings.Contains(out, "unavailable: engine") {
		t.Errorf("doctor with engine lean: exit %d: %s\n%s\nwant %q", code, errOut, out, want)
	}

	bad := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(bad, []byte("default_backnd: oci\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "", "doctor", "--config", bad); code != 1 || !strings.Contains(errOut, "default_backnd") {
		t.Errorf("doctor with a bad config: exit %d: %s", code, errOut)
	}
}
