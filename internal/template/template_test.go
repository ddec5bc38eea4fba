package template

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, source, data string
		want               api.Template
		wantErr            error
		wantMsg            []string // substrings of the error
	}{
		{
			name:   "readme example",
			source: "/etc/ds-sandbox/templates/my-template.yaml",
			data: `id: "my-template"
name: "My Custom Template"
env:
  CUSTOM_VAR: "value"
files:
  setup.sh: "#!/bin/bash\necho 'Hello'\n"
user: "developer"
workdir: /home/developer
cpu_count: 2
memory_mb: 2048
ready_timeout: 20
aliases: [mt]
`,
			want: api.Template{
				ID: "my-template", Name: "My Custom Template",
				Env:   map[string]string{"CUSTOM_VAR": "value"},
				Files: map[string]string{"setup.sh": "#!/bin/bash\necho 'Hello'\n"},
				User:  "developer", Workdir: "/home/developer",
				CPUCount: 2, MemoryMB: 2048, ReadyTimeout: 20, Aliases: []string{"mt"},
			},
		},
		{
			name: "limits", source: "t/lim.yaml",
			data: "pids_limit: 256\nmax_open_files: 1024\nmax_output_bytes: 1048576\ndisk_quota_mb: 512\n",
			want: api.Template{ID: "lim", PidsLimit: 256, MaxOpenFiles: 1024, MaxOutputBytes: 1 << 20, DiskQuotaMB: 512},
		},
		{
			name: "limits out of range", source: "t/lim.yaml", data: "pids_limit: 5\ndisk_quota_mb: 1\n",
			wantErr: api.ErrInvalid, wantMsg: []string{"pids_limit: 5 is out of range", "disk_quota_mb: 1 is out of range"},
		},
		{
			name: "engine and preload", source: "t/fast.yaml", data: "engine: lean\npreload: [numpy, pandas, matplotlib.pyplot, _priv.mod2]\n",
			want: api.Template{ID: "fast", Engine: api.EngineLean, Preload: []string{"numpy", "pandas", "matplotlib.pyplot", "_priv.mod2"}},
		},
		{
			name: "unknown engine", source: "t/x.yaml", data: "engine: jupyterlab\n",
			wantErr: api.ErrInvalid, wantMsg: []string{`template x: engine: "jupyterlab" is not one of ipykernel, lean`},
		},
		{
			name: "preload not a module", source: "t/x.yaml", data: "preload: [\"os; os.system('id')\"]\n",
			wantErr: api.ErrInvalid, wantMsg: []string{`template x: preload: module "os; os.system('id')": want a Python module name`},
		},
		{
			name: "preload bad names", source: "t/x.yaml", data: "preload: [a..b]\n",
			wantErr: api.ErrInvalid, wantMsg: []string{`preload: module "a..b"`},
		},
		{
			name: "preload leading digit", source: "t/x.yaml", data: "preload: [pkg.2x]\n",
			wantErr: api.ErrInvalid, wantMsg: []string{`preload: module "pkg.2x"`},
		},
		{
			name: "preload twice", source: "t/x.yaml", data: "preload: [numpy, numpy]\n",
			wantErr: api.ErrInvalid, wantMsg: []string{`preload: module "numpy" is listed twice`},
		},
		{
			name: "preload too long a name", source: "t/x.yaml", data: "preload: [" + strings.Repeat("a", MaxPreloadModule+1) + "]\n",
			wantErr: api.ErrInvalid, wantMsg: []string{"at most 200 characters"},
		},
		{
			name: "preload too many", source: "t/x.yaml", data: "preload: [" + strings.Repeat("m,", MaxPreload) + "m]\n",
			wantErr: api.ErrInvalid, wantMsg: []string{"preload: 65 modules: at most 64"},
		},
		{name: "id from file name", source: "dir/ds.yml", data: "image: python:3.12\n", want: api.Template{ID: "ds", Image: "python:3.12"}},
		{name: "empty mapping takes file name", source: "x.yaml", data: "{}\n", want: api.Template{ID: "x"}},
		{name: "inline source keeps id", source: "request", data: "id: inline\n", want: api.Template{ID: "inline"}},
		{
			name: "unknown key", source: "templates/x.yaml", data: "id: x\nname: n\nimagee: foo\n",
			wantErr: api.ErrInvalid, wantMsg: []string{"templates/x.yaml: line 3: field imagee not found"},
		},
		{
			name: "syntax error", source: "templates/x.yaml", data: "id: x\nenv:\n  A: [1,\n",
			wantErr: api.ErrInvalid, wantMsg: []string{"templates/x.yaml: line 3: did not find expected node content"},
		},
		{
			name: "wrong type", source: "t/x.yaml", data: "id: x\ncpu_count: many\n",
			wantErr: api.ErrInvalid, wantMsg: []string{"t/x.yaml: line 2: cannot unmarshal"},
		},
		{
			name: "duplicate key", source: "t/x.yaml", data: "id: x\nuser: a\nuser: b\n",
			wantErr: api.ErrInvalid, wantMsg: []string{"line 3", "already defined"},
		},
		{name: "empty file", source: "t/x.yaml", data: "", wantErr: api.ErrInvalid, wantMsg: []string{"t/x.yaml: empty document"}},
		{name: "two documents", source: "t/x.yaml", data: "id: x\n---\nid: y\n", wantErr: api.ErrInvalid, wantMsg: []string{"more than one YAML document"}},
		{name: "not a mapping", source: "t/x.yaml", data: "- a\n- b\n", wantErr: api.ErrInvalid, wantMsg: []string{"t/x.yaml: line 1"}},
		{
			name: "id differs from file name", source: "t/x.yaml", data: "id: y\n",
			wantErr: api.ErrInvalid, wantMsg: []string{`id "y" differs from the file name "x"`},
		},
		{name: "inline without id", source: "request", data: "name: n\n", wantErr: api.ErrInvalid, wantMsg: []string{"request: template: id: template id is empty"}},
		{
			name: "invalid field values", source: "t/x.yaml",
			data:    "files:\n  ../evil: x\nmemory_mb: 100\n",
			wantErr: api.ErrInvalid, wantMsg: []string{`files key "../evil"`, "memory_mb: 100 is out of range"},
		},
		{name: "too large", source: "big.yaml", data: "name: " + strings.Repeat("a", MaxSize), wantErr: api.ErrLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.data), tt.source)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Parse error = %v, want %v", err, tt.wantErr)
				}
				for _, m := range tt.wantMsg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("Parse error %q does not contain %q", err, m)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tmpl api.Template
		want []string // substrings; empty means valid
	}{
		{name: "minimal", tmpl: api.Template{ID: "a"}},
		{name: "full ranges", tmpl: api.Template{ID: "a", CPUCount: 16, MemoryMB: 65536, ReadyTimeout: 300, User: "_svc-1", Workdir: "/w"}},
		{name: "root workdir", tmpl: api.Template{ID: "a", Workdir: "/"}, want: []string{"root directory"}},
		{name: "nested file", tmpl: api.Template{ID: "a", Files: map[string]string{"conf/app.json": "{}", "a..b": ""}}},
		{name: "bad id", tmpl: api.Template{ID: "a/b"}, want: []string{"id:"}},
		{name: "long id", tmpl: api.Template{ID: strings.Repeat("a", 65)}, want: []string{"longer than 64"}},
		{name: "bad alias", tmpl: api.Template{ID: "a", Aliases: []string{"../x"}}, want: []string{"aliases[0]"}},
		{name: "user upper", tmpl: api.Template{ID: "a", User: "Root"}, want: []string{`user: user "Root"`}},
		{name: "user too long", tmpl: api.Template{ID: "a", User: strings.Repeat("u", 33)}, want: []string{"user:"}},
		{name: "user digit first", tmpl: api.Template{ID: "a", User: "1x"}, want: []string{"user:"}},
		{name: "workdir relative", tmpl: api.Template{ID: "a", Workdir: "home/u"}, want: []string{"workdir", "absolute"}},
		{name: "workdir unclean", tmpl: api.Template{ID: "a", Workdir: "/home/u/"}, want: []string{"not clean"}},
		{name: "workdir dotdot", tmpl: api.Template{ID: "a", Workdir: "/home/../etc"}, want: []string{"not clean"}},
		{name: "file absolute", tmpl: api.Template{ID: "a", Files: map[string]string{"/etc/passwd": ""}}, want: []string{`files key "/etc/passwd": must be relative`}},
		{name: "file dotdot", tmpl: api.Template{ID: "a", Files: map[string]string{"a/../../b": ""}}, want: []string{`files key "a/../../b"`}},
		{name: "file unclean", tmpl: api.Template{ID: "a", Files: map[string]string{"a//b": ""}}, want: []string{"not clean"}},
		{name: "file empty", tmpl: api.Template{ID: "a", Files: map[string]string{"": ""}}, want: []string{"empty path"}},
		{name: "file dir", tmpl: api.Template{ID: "a", Files: map[string]string{"dir/": ""}}, want: []string{"not clean"}},
		{name: "env key", tmpl: api.Template{ID: "a", Env: map[string]string{"1A": "x"}}, want: []string{`env key "1A"`}},
		{name: "env key dash", tmpl: api.Template{ID: "a", Env: map[string]string{"A-B": "x"}}, want: []string{`env key "A-B"`}},
		{name: "env value nul", tmpl: api.Template{ID: "a", Env: map[string]string{"A": "x\x00"}}, want: []string{"NUL"}},
		{name: "cpu", tmpl: api.Template{ID: "a", CPUCount: 17}, want: []string{"cpu_count: 17 is out of range"}},
		{name: "cpu negative", tmpl: api.Template{ID: "a", CPUCount: -1}, want: []string{"cpu_count"}},
		{name: "memory", tmpl: api.Template{ID: "a", MemoryMB: 255}, want: []string{"memory_mb"}},
		{name: "ready", tmpl: api.Template{ID: "a", ReadyTimeout: 301}, want: []string{"ready_timeout"}},
		{
			name: "all joined",
			tmpl: api.Template{ID: "a", User: "X", Workdir: "x", CPUCount: 99, MemoryMB: 1, ReadyTimeout: -3},
			want: []string{"user:", "workdir:", "cpu_count:", "memory_mb:", "ready_timeout:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Validate(tt.tmpl)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
			for _, m := range tt.want {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Validate error %q does not contain %q", err, m)
				}
			}
		})
	}
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	state, etc := filepath.Join(root, "state"), filepath.Join(root, "etc")
	writeFile(t, filepath.Join(state, "both.yaml"), "name: from-state\n")
	writeFile(t, filepath.Join(etc, "both.yaml"), "name: from-etc\n")
	writeFile(t, filepath.Join(etc, "etconly.yml"), "name: yml\n")
	writeFile(t, filepath.Join(etc, "pref.yaml"), "name: yaml-wins\n")
	writeFile(t, filepath.Join(etc, "pref.yml"), "name: yml-loses\n")
	writeFile(t, filepath.Join(etc, "broken.yaml"), "name: x\nbogus: 1\n")
	dirs := []string{"", state, etc}

	tests := []struct {
		name, id, wantName string
		wantErr            error
		wantMsg            []string
	}{
		{name: "first dir wins", id: "both", wantName: "from-state"},
		{name: "later dir, yml", id: "etconly", wantName: "yml"},
		{name: "yaml before yml", id: "pref", wantName: "yaml-wins"},
		{name: "missing", id: "nope", wantErr: api.ErrNotFound, wantMsg: []string{`"nope"`, state, etc}},
		{name: "traversal", id: "../x", wantErr: api.ErrInvalid},
		{name: "separator", id: "a/b", wantErr: api.ErrInvalid},
		{name: "empty", id: "", wantErr: api.ErrInvalid},
		{name: "malformed", id: "broken", wantErr: api.ErrInvalid, wantMsg: []string{filepath.Join(etc, "broken.yaml") + ": line 2: field bogus not found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Load(dirs, tt.id)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Load error = %v, want %v", err, tt.wantErr)
				}
				for _, m := range tt.wantMsg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("Load error %q does not contain %q", err, m)
					}
				}
				return
			}
			if err != nil || got.ID != tt.id || got.Name != tt.wantName {
				t.Fatalf("Load = %+v, %v; want id %q name %q", got, err, tt.id, tt.wantName)
			}
		})
	}
	if _, err := Load(nil, "x"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Load with no dirs = %v, want ErrNotFound", err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	state, etc := filepath.Join(root, "state"), filepath.Join(root, "etc")
	writeFile(t, filepath.Join(state, "b.yaml"), "name: state-b\n")
	writeFile(t, filepath.Join(etc, "b.yaml"), "bogus: shadowed, never read\n")
	writeFile(t, filepath.Join(etc, "a.yml"), "name: etc-a\n")
	writeFile(t, filepath.Join(etc, "README.md"), "not a template\n")
	writeFile(t, filepath.Join(etc, ".hidden.yaml"), "bogus: 1\n")
	writeFile(t, filepath.Join(etc, "bad.yaml"), "imagee: x\n")
	writeFile(t, filepath.Join(etc, "-x.yaml"), "name: x\n")

	got, err := List([]string{state, etc, filepath.Join(root, "missing")})
	var ids []string
	for _, tm := range got {
		ids = append(ids, tm.ID+"="+tm.Name)
	}
	if want := "a=etc-a,b=state-b"; strings.Join(ids, ",") != want {
		t.Errorf("List = %v, want %s", ids, want)
	}
	if err == nil {
		t.Fatal("List: want an error for the malformed files")
	}
	for _, m := range []string{filepath.Join(etc, "bad.yaml") + ": line 1: field imagee not found", filepath.Join(etc, "-x.yaml")} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("List error %q does not contain %q", err, m)
		}
	}
	if strings.Contains(err.Error(), "shadowed") || strings.Contains(err.Error(), ".hidden") {
		t.Errorf("List read a shadowed or hidden file: %v", err)
	}

	clean, err := List([]string{state})
	if err != nil || len(clean) != 1 {
		t.Errorf("List(clean) = %v, %v", clean, err)
	}
}

func TestSaveRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "templates")
	tm := api.Template{
		ID: "rt", Name: "Round trip", Env: map[string]string{"A": "1"},
		Files: map[string]string{"x/y.txt": "line1\nline2\n"}, Workdir: "/home/user", MemoryMB: 1024,
	}
	if err := Save(dir, tm); err != nil {
		t.Fatalf("Save: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "rt.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"cpu_count", "image", "aliases", "metadata"} {
		if strings.Contains(string(data), absent) {
			t.Errorf("saved file has zero field %s:\n%s", absent, data)
		}
	}
	got, err := Load([]string{dir}, "rt")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(got, tm) {
		t.Errorf("round trip = %+v, want %+v", got, tm)
	}
	if err := Save(dir, api.Template{ID: "bad", CPUCount: 99}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("Save(invalid) = %v, want ErrInvalid", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.yaml")); !os.IsNotExist(err) {
		t.Errorf("Save(invalid) wrote a file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("id: x\nname: n\nenv:\n  A: b\nfiles:\n  a/b: c\ncpu_count: 2\n"), "x.yaml")
	f.Add([]byte("imagee: 1"), "t.yml")
	f.Add([]byte("a: &a [*a, *a]\n"), "request")
	f.Add([]byte("files: {'../x': y}\n"), "y.yaml")
	f.Fuzz(func(t *testing.T, data []byte, source string) {
		tm, err := Parse(data, source)
		if err != nil {
			return
		}
		if verr := Validate(tm); verr != nil {
			t.Fatalf("Parse accepted a template that fails Validate: %v\n%q", verr, data)
		}
		if _, err := Marshal(tm); err != nil {
			t.Fatalf("Marshal of a parsed template: %v", err)
		}
	})
}
