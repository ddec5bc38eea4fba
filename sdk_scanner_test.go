package dssandbox_test

import (
	"errors"
	"strings"
	"testing"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
)

// TestCodeScanner runs in embedded and (DS_SANDBOX_TEST_REMOTE=1) remote
// mode: the configured mode is the default, warn.
func TestCodeScanner(t *testing.T) {
	t.Parallel()
	t.Run("warn attaches findings and runs", func(t *testing.T) {
		t.Parallel()
		sbx := newSandbox(t, dssandbox.Options{})
		var printed string
		e := run(t, sbx, "import subprocess\nprint('ran')", dssandbox.OnStdout(func(s string) { printed += s }))
		if e.Error != nil || printed != "ran\n" {
			t.Fatalf("the cell did not run: %+v", e)
		}
		if len(e.Findings) != 1 || e.Findings[0].Module != "subprocess" || e.Findings[0].Line != 1 || e.Findings[0].Message == "" {
			t.Fatalf("findings %+v", e.Findings)
		}
		if e := run(t, sbx, "sum([1, 2])"); e.Findings != nil || e.Text() != "3" {
			t.Fatalf("harmless code: %+v", e)
		}

		e = run(t, sbx, "open('outputs/once.txt', 'w').write('x')", dssandbox.WithScannerMode(dssandbox.ScannerBlock))
		if e.Error == nil || e.Error.Name != dssandbox.ErrNameScanBlocked {
			t.Fatalf("WithScannerMode(block): %+v", e)
		}
		if ok, err := sbx.Files.Exists(t.Context(), "outputs/once.txt"); err != nil || ok {
			t.Fatalf("the blocked cell ran: %v %v", ok, err)
		}
		if _, err := sbx.RunCode(t.Context(), "1", dssandbox.WithScannerMode(dssandbox.ScannerOff)); !errors.Is(err, dssandbox.ErrPermission) {
			t.Fatalf("WithScannerMode(off) on a warn sandbox: %v", err)
		}
	})
	t.Run("block does not run critical code", func(t *testing.T) {
		t.Parallel()
		sbx := newSandbox(t, dssandbox.Options{ScannerMode: dssandbox.ScannerBlock})
		info, err := sbx.GetInfo(t.Context())
		if err != nil || info.ScannerMode != dssandbox.ScannerBlock {
			t.Fatalf("info %+v, %v", info, err)
		}
		var errs []dssandbox.ExecutionError
		e := run(t, sbx, "x = 1\nwith open('outputs/blocked.txt', 'w') as f:\n    f.write('ran')",
			dssandbox.OnError(func(e dssandbox.ExecutionError) { errs = append(errs, e) }))
		if e.Error == nil || e.Error.Name != dssandbox.ErrNameScanBlocked || !strings.Contains(e.Error.Value, "line 2") || len(errs) != 1 {
			t.Fatalf("execution %+v (OnError saw %d)", e, len(errs))
		}
		if len(e.Findings) != 1 || e.Findings[0].Function != "open" || e.Findings[0].Severity != "critical" {
			t.Fatalf("findings %+v", e.Findings)
		}
		if e := run(t, sbx, "import os\n'x' in globals()"); e.Error != nil || e.Text() != "False" || len(e.Findings) != 1 {
			t.Fatalf("after the blocked cell: %+v", e)
		}
		if ok, err := sbx.Files.Exists(t.Context(), "outputs/blocked.txt"); err != nil || ok {
			t.Fatalf("the blocked cell ran: %v %v", ok, err)
		}
	})
}
