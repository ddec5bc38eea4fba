package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func TestWriteAndRotate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit", "audit.jsonl")
	l, err := Open(path, 2000, 2)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			if err := l.Write(Record{Action: "execute", SandboxID: fmt.Sprint(i), Outcome: OK, CodeSize: i}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(Record{Action: "x"}); err == nil {
		t.Fatal("write after Close succeeded")
	}
	total := 0
	for _, p := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if st.Size() > 2000 || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: size %d mode %v", p, st.Size(), st.Mode())
		}
		f, _ := os.Open(p)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Action != "execute" || r.Time.IsZero() {
				t.Fatalf("bad line %q: %v", sc.Text(), err)
			}
			total++
		}
		f.Close()
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Fatal("more backups than configured")
	}
	if total == 0 || total >= 100 {
		t.Fatalf("%d records kept across 3 files: rotation should have dropped the oldest", total)
	}
}

func TestSetExecution(t *testing.T) {
	for _, c := range []struct {
		name string
		exec *api.Execution
		want string
	}{
		{"no execution", nil, ""},
		{"a result", &api.Execution{}, ""},
		{"a user exception is a result", &api.Execution{Error: &api.ExecutionError{Name: "ZeroDivisionError"}}, ""},
		{"timeout", &api.Execution{Error: &api.ExecutionError{Name: api.ErrNameTimeout}}, Timeout},
		{"oom", &api.Execution{OOMKilled: true, Error: &api.ExecutionError{Name: api.ErrNameDeadKernel}}, OOM},
		{"another kernel death", &api.Execution{Error: &api.ExecutionError{Name: api.ErrNameDeadKernel}}, ""},
		{"blocked", &api.Execution{Error: &api.ExecutionError{Name: api.ErrNameScanBlocked}}, Blocked},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r Record
			r.SetExecution(c.exec)
			if r.Outcome != c.want {
				t.Fatalf("outcome %q, want %q", r.Outcome, c.want)
			}
		})
	}
}
