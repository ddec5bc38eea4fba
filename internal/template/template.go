// Package template parses, validates and stores sandbox templates: YAML files
// with the fields of api.Template, one per file, named <id>.yaml (or .yml).
//
// The daemon searches a list of directories in order (the state directory's
// templates/ first, then /etc/ds-sandbox/templates); the first file found for an
// id wins. A template file looks like:
//
//	id: my-template          # optional; when present it must equal the file name
//	name: My Custom Template
//	env:
//	  CUSTOM_VAR: value
//	files:
//	  setup.sh: "#!/bin/bash\necho 'Hello'\n"
//	user: developer
//	workdir: /home/developer
//
// Decoding is strict: an unknown key is an error naming the file and line.
package template

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"go.yaml.in/yaml/v3"
)

// MaxIDLen is the longest valid template id.
const MaxIDLen = 64

// MaxSize bounds a template file; larger input is api.ErrLimit.
const MaxSize = 1 << 20

// Ranges of the numeric fields; 0 always means "the default".
const (
	MaxCPUCount     = 16
	MinMemoryMB     = 256
	MaxMemoryMB     = 65536
	MaxReadyTimeout = 300 // seconds
	MinPidsLimit    = 128
	MaxPidsLimit    = 1 << 22
	MinOpenFiles    = 64
	MaxOpenFiles    = 1 << 20
	MinOutputBytes  = 1 << 10
	MaxOutputBytes  = 1 << 30
	MinDiskQuotaMB  = 16
	MaxDiskQuotaMB  = 1 << 24
)

// ValidateLimits checks a set of limits against the ranges above (0 = the
// default), naming each bad field; errors wrap api.ErrInvalid.
func ValidateLimits(l api.Limits) error {
	var errs []error
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
	}
	add("cpu_count", inRange(l.CPUCount, 1, MaxCPUCount))
	add("memory_mb", inRange(l.MemoryMB, MinMemoryMB, MaxMemoryMB))
	add("pids_limit", inRange(l.PidsLimit, MinPidsLimit, MaxPidsLimit))
	add("max_open_files", inRange(l.MaxOpenFiles, MinOpenFiles, MaxOpenFiles))
	if l.MaxOutputBytes != 0 && (l.MaxOutputBytes < MinOutputBytes || l.MaxOutputBytes > MaxOutputBytes) {
		add("max_output_bytes", api.Errorf(api.ErrInvalid, "%d is out of range: want 0 (the default) or %d..%d", l.MaxOutputBytes, MinOutputBytes, MaxOutputBytes))
	}
	add("disk_quota_mb", inRange(l.DiskQuotaMB, MinDiskQuotaMB, MaxDiskQuotaMB))
	return errors.Join(errs...)
}

// LimitsOf returns a template's limits.
func LimitsOf(t api.Template) api.Limits {
	return api.Limits{
		MemoryMB: t.MemoryMB, CPUCount: t.CPUCount, PidsLimit: t.PidsLimit,
		MaxOpenFiles: t.MaxOpenFiles, MaxOutputBytes: t.MaxOutputBytes, DiskQuotaMB: t.DiskQuotaMB,
	}
}

// extensions are tried in this order, so <id>.yaml wins over <id>.yml.
var extensions = []string{".yaml", ".yml"}

// Parse decodes one template from YAML and validates it. source names the input
// in error messages ("templates/x.yaml: line 3: field imagee not found"). When
// source ends in .yaml or .yml, its base name is the template's file id: a
// missing id defaults to it, and an id that differs from it is an error naming
// both. Every error wraps api.ErrInvalid, except oversized input (api.ErrLimit).
func Parse(data []byte, source string) (api.Template, error) {
	if len(data) > MaxSize {
		return api.Template{}, api.Errorf(api.ErrLimit, "%s: larger than %d bytes", source, MaxSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var t api.Template
	if err := dec.Decode(&t); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("empty document")
		}
		return api.Template{}, api.Errorf(api.ErrInvalid, "%s: %s", source, yamlMessage(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return api.Template{}, api.Errorf(api.ErrInvalid, "%s: more than one YAML document; put one template in each file", source)
	}
	if fid, ok := fileID(source); ok {
		switch {
		case t.ID == "":
			t.ID = fid
		case t.ID != fid:
			return api.Template{}, api.Errorf(api.ErrInvalid, "%s: id %q differs from the file name %q; rename the file or fix the id", source, t.ID, fid)
		}
	}
	if err := Validate(t); err != nil {
		return api.Template{}, fmt.Errorf("%s: %w", source, err)
	}
	return t, nil
}

// yamlMessage turns a yaml.v3 error into "line N: problem[; line M: problem]".
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			if j := strings.Index(m, " in type "); j >= 0 {
				m = m[:j]
			}
			msgs[i] = m
		}
		return strings.Join(msgs, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// fileID returns the id implied by a file name ending in .yaml or .yml.
func fileID(source string) (string, bool) {
	base := filepath.Base(source)
	for _, ext := range extensions {
		if id, ok := strings.CutSuffix(base, ext); ok && id != "" {
			return id, true
		}
	}
	return "", false
}

// Validate checks every field of t and returns all problems joined
// (errors.Join), each naming the field and wrapping api.ErrInvalid.
func Validate(t api.Template) error {
	var errs []error
	prefix := "template"
	if ValidateID(t.ID) == nil {
		prefix += " " + t.ID
	}
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", prefix, field, err))
		}
	}
	add("id", ValidateID(t.ID))
	if t.User != "" {
		add("user", ValidateUser(t.User))
	}
	if t.Workdir != "" {
		add("workdir", ValidateWorkdir(t.Workdir))
	}
	for _, k := range slices.Sorted(maps.Keys(t.Files)) { // sorted: stable messages
		add(fmt.Sprintf("files key %q", k), ValidateFilePath(k))
	}
	for _, k := range slices.Sorted(maps.Keys(t.Env)) {
		add(fmt.Sprintf("env key %q", k), ValidateEnv(k, t.Env[k]))
	}
	for i, a := range t.Aliases {
		add(fmt.Sprintf("aliases[%d]", i), ValidateID(a))
	}
	if err, ok := ValidateLimits(LimitsOf(t)).(interface{ Unwrap() []error }); ok {
		for _, e := range err.Unwrap() {
			errs = append(errs, fmt.Errorf("%s: %w", prefix, e))
		}
	}
	add("ready_timeout", inRange(t.ReadyTimeout, 1, MaxReadyTimeout))
	if t.ScannerMode != "" && !slices.Contains(api.ScannerModes, t.ScannerMode) {
		add("scanner_mode", api.Errorf(api.ErrInvalid, "%q is not one of %s", t.ScannerMode, strings.Join(api.ScannerModes, ", ")))
	}
	if t.Engine != "" {
		add("engine", ValidateEngine(t.Engine))
	}
	add("preload", ValidatePreload(t.Preload))
	return errors.Join(errs...)
}

func inRange(v, lo, hi int) error {
	if v == 0 || v >= lo && v <= hi {
		return nil
	}
	return api.Errorf(api.ErrInvalid, "%d is out of range: want 0 (the default) or %d..%d", v, lo, hi)
}

// ValidateID reports whether id is a valid template id: 1 to 64 characters of
// [A-Za-z0-9._-], not starting with '.' or '-' (so never a path). The error wraps
// api.ErrInvalid.
func ValidateID(id string) error {
	switch {
	case id == "":
		return api.Errorf(api.ErrInvalid, "template id is empty")
	case len(id) > MaxIDLen:
		return api.Errorf(api.ErrInvalid, "template id %.20q…: longer than %d characters", id, MaxIDLen)
	case id[0] == '.' || id[0] == '-':
		return api.Errorf(api.ErrInvalid, "template id %q: must not start with '.' or '-'", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return api.Errorf(api.ErrInvalid, "template id %q: only letters, digits, '.', '_' and '-' are allowed", id)
		}
	}
	return nil
}

// ValidateUser reports whether name is a usable POSIX user name:
// [a-z_][a-z0-9_-]{0,31}. The error wraps api.ErrInvalid.
func ValidateUser(name string) error {
	ok := name != "" && len(name) <= 32 && (name[0] >= 'a' && name[0] <= 'z' || name[0] == '_')
	for i := 1; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if !ok {
		return api.Errorf(api.ErrInvalid, "user %q: want 1-32 characters of [a-z0-9_-], starting with a lower-case letter or '_'", name)
	}
	return nil
}

// ValidateWorkdir reports whether dir is an absolute, clean, slash-separated
// path inside the sandbox. The error wraps api.ErrInvalid.
func ValidateWorkdir(dir string) error {
	switch {
	case !path.IsAbs(dir):
		return api.Errorf(api.ErrInvalid, "workdir %q: must be an absolute path", dir)
	case path.Clean(dir) != dir:
		return api.Errorf(api.ErrInvalid, "workdir %q: not clean; did you mean %q?", dir, path.Clean(dir))
	case strings.ContainsRune(dir, 0):
		return api.Errorf(api.ErrInvalid, "workdir %q: contains a NUL byte", dir)
	case dir == "/":
		return api.Errorf(api.ErrInvalid, "workdir %q: the workspace cannot be mounted over the root directory", dir)
	}
	return nil
}

// ValidateFilePath reports whether p may name a template file: a clean,
// relative, slash-separated path that stays inside the workdir (no "..").
// The error wraps api.ErrInvalid.
func ValidateFilePath(p string) error {
	switch {
	case p == "" || p == ".":
		return api.Errorf(api.ErrInvalid, "empty path")
	case strings.ContainsRune(p, 0):
		return api.Errorf(api.ErrInvalid, "contains a NUL byte")
	case path.IsAbs(p):
		return api.Errorf(api.ErrInvalid, "must be relative to the workdir")
	case p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/.."):
		return api.Errorf(api.ErrInvalid, "must not contain '..'")
	case path.Clean(p) != p:
		return api.Errorf(api.ErrInvalid, "not clean; did you mean %q?", path.Clean(p))
	}
	return nil
}

// Bounds of a preload list (api.Template.Preload).
const (
	MaxPreload       = 64
	MaxPreloadModule = api.MaxPreloadModule // characters of one module name
)

// ValidateEngine reports whether e names a code engine (api.Engines). The
// error wraps api.ErrInvalid.
func ValidateEngine(e string) error {
	if !slices.Contains(api.Engines, e) {
		return api.Errorf(api.ErrInvalid, "%q is not one of %s", e, strings.Join(api.Engines, ", "))
	}
	return nil
}

// ValidatePreload reports whether mods is a usable preload list: at most
// MaxPreload Python module names, each dotted identifiers of [A-Za-z0-9_]
// (no leading digit) of at most MaxPreloadModule characters, none twice.
// The names become imports run in every engine, so nothing else passes.
// The error wraps api.ErrInvalid.
func ValidatePreload(mods []string) error {
	if len(mods) > MaxPreload {
		return api.Errorf(api.ErrInvalid, "%d modules: at most %d", len(mods), MaxPreload)
	}
	seen := make(map[string]bool, len(mods))
	for _, m := range mods {
		if !api.PreloadModuleName(m) {
			return api.Errorf(api.ErrInvalid, "module %.60q: want a Python module name such as pandas or matplotlib.pyplot (dotted identifiers of [A-Za-z0-9_], at most %d characters)", m, MaxPreloadModule)
		}
		if seen[m] {
			return api.Errorf(api.ErrInvalid, "module %q is listed twice", m)
		}
		seen[m] = true
	}
	return nil
}

// ValidateEnv reports whether key=value can be passed to a process: key is an
// identifier ([A-Za-z_][A-Za-z0-9_]*) and value has no NUL byte. The error wraps
// api.ErrInvalid.
func ValidateEnv(key, value string) error {
	ok := key != "" && !(key[0] >= '0' && key[0] <= '9')
	for i := 0; ok && i < len(key); i++ {
		c := key[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
	}
	if !ok {
		return api.Errorf(api.ErrInvalid, "not a valid variable name: want [A-Za-z_][A-Za-z0-9_]*")
	}
	if strings.ContainsRune(value, 0) {
		return api.Errorf(api.ErrInvalid, "value contains a NUL byte")
	}
	return nil
}
