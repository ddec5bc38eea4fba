package cli

import (
	"os"
	"strings"
	"testing"
)

// TestLoadSuite runs a short load and fault suite (the real binary's
// daemon, kill -9 of two kernels and of the daemon midway) on the oci
// backend as root, else on local: no request fails, nothing is left behind,
// and every sandbox's create and kill is in the audit log.
func TestLoadSuite(t *testing.T) {
	t.Parallel()
	bin, _ := realCLI(t)
	backend := "local"
	if os.Geteuid() == 0 {
		backend = "oci"
	}
	var log strings.Builder
	rep, err := runLoad(t.Context(), loadOptions{backend: backend, clients: 6, execs: 6, killKernels: 2, killDaemon: true, selfPath: bin, log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("%+v", *rep)
	if rep.Errors != 0 || len(rep.Leftovers) != 0 || rep.AuditMissing != 0 || rep.Cells != 36 || rep.DaemonKills != 1 || rep.KernelKills != 2 {
		t.Fatalf("load on %s: %d errors (%s), left behind %v, %d audit records missing, %d cells, %d daemon kills\n%s",
			backend, rep.Errors, rep.ErrorSample, rep.Leftovers, rep.AuditMissing, rep.Cells, rep.DaemonKills, log.String())
	}
}
