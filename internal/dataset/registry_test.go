package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func openRegistry(t *testing.T) *Registry {
	t.Helper()
	r, err := Open(filepath.Join(t.TempDir(), "datasets"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

// writeTree creates files (slash paths relative to root) with the given contents.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, data := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestDetectFormat(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"a.csv": "csv", "A.CSV": "csv", "a.tsv": "tsv", "a.parquet": "parquet", "a.json": "json",
		"a.jsonl": "json", "a.xlsx": "excel", "a.xls": "excel", "a.feather": "feather", "a.fst": "feather",
		"a.txt": "text", "a.bin": "unknown", "noext": "unknown", "a.csv.gz": "unknown",
	}
	for name, want := range tests {
		if got := DetectFormat(name); got != want {
			t.Errorf("DetectFormat(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestRegisterFile(t *testing.T) {
	t.Parallel()
	r := openRegistry(t)
	src := filepath.Join(t.TempDir(), "iris.csv")
	writeTree(t, filepath.Dir(src), map[string]string{"iris.csv": "a,b\n1,2\n"})

	ds, err := r.Register(src, "iris", "the iris data", []string{" flowers ", "demo", "demo"})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	want := api.Dataset{
		Name: "iris", Description: "the iris data", Tags: []string{"flowers", "demo"},
		Format: "csv", SHA256: sha("a,b\n1,2\n"), Size: 8, RegisteredAt: ds.RegisteredAt,
	}
	if !reflect.DeepEqual(ds, want) || ds.RegisteredAt.IsZero() {
		t.Errorf("Register =\n%+v\nwant\n%+v", ds, want)
	}
	stored := filepath.Join(r.Dir(), "iris", "iris.csv")
	fi, err := os.Stat(stored)
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("stored file %s: %v %v, want mode 444", stored, fi, err)
	}
	got, err := r.Get("iris")
	if err != nil || !reflect.DeepEqual(got, ds) {
		t.Errorf("Get = %+v, %v", got, err)
	}
	// A reopened registry sees the same entry.
	r2, err := Open(r.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r2.Get("iris"); err != nil || !got.RegisteredAt.Equal(ds.RegisteredAt) || got.SHA256 != ds.SHA256 {
		t.Errorf("reopened Get = %+v, %v", got, err)
	}
	if err := r.Verify("iris"); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestRegisterRelativeAndUnknownFormat(t *testing.T) {
	t.Parallel()
	r := openRegistry(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"blob.bin": "\x00\x01"})
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, filepath.Join(dir, "blob.bin"))
	if err != nil {
		t.Skipf("no relative path to the temp dir: %v", err)
	}
	ds, err := r.Register(rel, "blob", "", nil)
	if err != nil {
		t.Fatalf("Register(%s): %v", rel, err)
	}
	if ds.Format != FormatUnknown {
		t.Errorf("Format = %q, want unknown", ds.Format)
	}
	if list, err := r.List(Filter{}); err != nil || len(list) != 1 {
		t.Errorf("List after an unknown format = %v, %v", list, err)
	}
}

func TestRegisterDirChecksum(t *testing.T) {
	t.Parallel()
	r := openRegistry(t)
	files := map[string]string{"a.txt": "A", "a/b.csv": "B", "z/y/x.json": "{}"}
	src1, src2 := t.TempDir(), t.TempDir()
	writeTree(t, src1, files)
	writeTree(t, src2, files)
	if err := os.Mkdir(filepath.Join(src2, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}

	d1, err := r.Register(src1, "one", "", nil)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	// Sorted by full relative path: "a.txt" < "a/b.csv" because '.' < '/'.
	lines := "a.txt\x00" + sha("A") + "\n" + "a/b.csv\x00" + sha("B") + "\n" + "z/y/x.json\x00" + sha("{}") + "\n"
	if want := sha(lines); d1.SHA256 != want || d1.Size != 4 || !d1.IsDir || d1.Format != FormatDir {
		t.Errorf("dir dataset = %+v, want sha %s size 4", d1, want)
	}
	d2, err := r.Register(src2, "two", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d1.SHA256 != d2.SHA256 {
		t.Errorf("same content, different checksums: %s vs %s", d1.SHA256, d2.SHA256)
	}
	if _, err := os.Stat(filepath.Join(r.Dir(), "two", "empty")); err != nil {
		t.Errorf("empty directory not copied: %v", err)
	}
	writeTree(t, src2, map[string]string{"a/b.csv": "C"})
	if err := r.Remove("two"); err != nil {
		t.Fatal(err)
	}
	d3, err := r.Register(src2, "two", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d3.SHA256 == d1.SHA256 {
		t.Error("changed content, same checksum")
	}
	for _, n := range []string{"one", "two"} {
		if err := r.Verify(n); err != nil {
			t.Errorf("Verify(%s): %v", n, err)
		}
	}
}

func TestRegisterErrors(t *testing.T) {
	t.Parallel()
	r := openRegistry(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"f.csv": "x", "withlink/ok.csv": "y"})
	if err := os.Symlink("/etc/passwd", filepath.Join(src, "withlink", "passwd")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "withfifo"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(src, "withfifo", "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(filepath.Join(src, "f.csv"), "taken", "", nil); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(src, "f.csv")
	tests := []struct {
		name, source, dsName string
		tags                 []string
		want                 error
		msg                  string
	}{
		{"traversal name", file, "../x", nil, api.ErrInvalid, "must not start"},
		{"slash name", file, "a/b", nil, api.ErrInvalid, "only letters"},
		{"empty name", file, "", nil, api.ErrInvalid, "empty"},
		{"long name", file, strings.Repeat("n", 65), nil, api.ErrInvalid, "longer than 64"},
		{"empty source", "", "x", nil, api.ErrInvalid, "source path is empty"},
		{"missing source", filepath.Join(src, "nope.csv"), "x", nil, api.ErrNotFound, "nope.csv"},
		{"device", "/dev/null", "x", nil, api.ErrInvalid, "not a regular file"},
		{"symlink inside", filepath.Join(src, "withlink"), "x", nil, api.ErrInvalid, "passwd is a symbolic link"},
		{"fifo inside", filepath.Join(src, "withfifo"), "x", nil, api.ErrInvalid, "pipe is not a regular file"},
		{"empty tag", file, "x", []string{"a", " "}, api.ErrInvalid, "tag is empty"},
		{"exists", file, "taken", nil, api.ErrExists, "taken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := r.Register(tt.source, tt.dsName, "", tt.tags)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Register = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestFailedRegisterLeavesIndexIntact(t *testing.T) {
	t.Parallel()
	r := openRegistry(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"good.csv": "1", "bad/x.csv": "2"})
	if err := os.Symlink("x.csv", filepath.Join(src, "bad", "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(filepath.Join(src, "good.csv"), "good", "", nil); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(r.Dir(), indexName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(filepath.Join(src, "bad"), "bad", "", nil); err == nil {
		t.Fatal("Register of a directory with a link succeeded")
	}
	after, err := os.ReadFile(filepath.Join(r.Dir(), indexName))
	if err != nil || string(before) != string(after) {
		t.Errorf("index changed by a failed Register:\n%s\n---\n%s", before, after)
	}
	entries, _ := os.ReadDir(r.Dir())
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stagingPrefix) || e.Name() == "bad" {
			t.Errorf("leftover %s after a failed Register", e.Name())
		}
	}
	// The registry still works.
	if _, err := r.Register(filepath.Join(src, "bad", "x.csv"), "bad", "", nil); err != nil {
		t.Errorf("Register after a failure: %v", err)
	}
	if list, err := r.List(Filter{}); err != nil || len(list) != 2 {
		t.Errorf("List = %v, %v; want 2 datasets", list, err)
	}
}

func TestCorruptIndex(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, index, msg string }{
		{"not json", "{", "unexpected end of JSON input"},
		{"wrong version", `{"version": 9, "datasets": []}`, "version 9"},
		{"bad name", `{"version": 1, "datasets": [{"name": "../x", "file": "a"}]}`, "must not start"},
		{"duplicate", `{"version": 1, "datasets": [{"name": "a", "file": "f"}, {"name": "a", "file": "f"}]}`, "listed twice"},
		{"bad file", `{"version": 1, "datasets": [{"name": "a", "file": "../f"}]}`, "bad file name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := filepath.Join(dir, indexName)
			if err := os.WriteFile(p, []byte(tt.index), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir)
			if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Open = %v, want a corrupt-index error naming %s and %q", err, p, tt.msg)
			}
			if b, _ := os.ReadFile(p); string(b) != tt.index {
				t.Error("Open rewrote a corrupt index")
			}
		})
	}
}

func TestListFilter(t *testing.T) {
	t.Parallel()
	r := openRegistry(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"s.csv": "1", "p.parquet": "2", "j.json": "3"})
	for _, reg := range []struct {
		file, name string
		tags       []string
	}{
		{"s.csv", "Sales-2024", []string{"finance", "q1"}},
		{"p.parquet", "sales-raw", []string{"finance"}},
		{"j.json", "config", nil},
	} {
		if _, err := r.Register(filepath.Join(src, reg.file), reg.name, "", reg.tags); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		filter Filter
		want   string
	}{
		{"all sorted", Filter{}, "Sales-2024,config,sales-raw"},
		{"name ignores case", Filter{NameContains: "SALES"}, "Sales-2024,sales-raw"},
		{"all tags", Filter{Tags: []string{"finance", "q1"}}, "Sales-2024"},
		{"one tag", Filter{Tags: []string{"finance"}}, "Sales-2024,sales-raw"},
		{"format", Filter{Format: "parquet"}, "sales-raw"},
		{"nothing", Filter{NameContains: "zzz"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			list, err := r.List(tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, d := range list {
				names = append(names, d.Name)
			}
			if got := strings.Join(names, ","); got != tt.want {
				t.Errorf("List(%+v) = %s, want %s", tt.filter, got, tt.want)
			}
		})
	}
}

func TestRemoveAndVerify(t *testing.T) {
	t.Parallel()
	r := openRegistry(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"f.csv": "data", "d/x.txt": "x"})
	if _, err := r.Register(filepath.Join(src, "f.csv"), "f", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(filepath.Join(src, "d"), "d", "", nil); err != nil {
		t.Fatal(err)
	}

	stored := filepath.Join(r.Dir(), "f", "f.csv")
	if err := os.Chmod(stored, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stored, []byte("DATA"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify("f"); !errors.Is(err, ErrChecksumMismatch) {
		t.Errorf("Verify(tampered file) = %v, want ErrChecksumMismatch", err)
	}
	if err := os.WriteFile(filepath.Join(r.Dir(), "d", "extra"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify("d"); !errors.Is(err, ErrChecksumMismatch) {
		t.Errorf("Verify(added file) = %v, want ErrChecksumMismatch", err)
	}
	if err := r.Verify("nope"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Verify(missing) = %v, want ErrNotFound", err)
	}

	if err := r.Remove("f"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir(), "f")); !os.IsNotExist(err) {
		t.Errorf("files remain after Remove: %v", err)
	}
	for _, tt := range []struct {
		name string
		err  error
		want error
	}{
		{"get removed", func() error { _, err := r.Get("f"); return err }(), api.ErrNotFound},
		{"remove twice", r.Remove("f"), api.ErrNotFound},
		{"remove bad name", r.Remove("../d"), api.ErrInvalid},
		{"get bad name", func() error { _, err := r.Get(""); return err }(), api.ErrInvalid},
	} {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, tt.err, tt.want)
		}
	}
}

func TestConcurrentRegister(t *testing.T) {
	t.Parallel()
	r := openRegistry(t)
	src := filepath.Join(t.TempDir(), "f.csv")
	writeTree(t, filepath.Dir(src), map[string]string{"f.csv": "x"})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, exists := 0, 0
	for i := range 8 {
		wg.Go(func() {
			if _, err := r.Register(src, fmt.Sprintf("n%d", i), "", nil); err != nil {
				t.Errorf("Register n%d: %v", i, err)
			}
			_, err := r.Register(src, "same", "", nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, api.ErrExists):
				exists++
			default:
				t.Errorf("Register same: %v", err)
			}
			if _, err := r.List(Filter{}); err != nil {
				t.Errorf("List: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || exists != 7 {
		t.Errorf("same name: %d successes, %d ErrExists; want 1 and 7", wins, exists)
	}
	if list, _ := r.List(Filter{}); len(list) != 9 {
		t.Errorf("List = %d datasets, want 9", len(list))
	}
}
