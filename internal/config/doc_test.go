package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// configDoc is the reference of every key and variable.
const configDoc = "../../docs/CONFIG.md"

// fileKeys returns the keys of the config file, from the yaml tags of t's
// fields: "api_keys" and, for a list of structs, "api_keys[].id" and so on.
func fileKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || tag == "-" {
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		key := prefix + tag
		keys = append(keys, key)
		ft := f.Type
		if ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			sub := key + "."
			if f.Type.Kind() == reflect.Slice {
				sub = key + "[]."
			}
			keys = append(keys, fileKeys(ft, sub)...)
		}
	}
	return keys
}

// docTable returns the rows of the first table after the heading "## "+title
// in doc: each row's cells, trimmed.
func docTable(t *testing.T, doc, title string) [][]string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n## "+title+"\n")
	if !ok {
		t.Fatalf("%s has no section %q", configDoc, "## "+title)
	}
	if end := strings.Index(rest, "\n## "); end >= 0 {
		rest = rest[:end]
	}
	var rows [][]string
	for line := range strings.SplitSeq(rest, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	if len(rows) < 2 {
		t.Fatalf("%s: the section %q has no table", configDoc, title)
	}
	return rows[1:] // without the header
}

var codeSpan = regexp.MustCompile("`([^`]*)`")

// name is a row's first cell, which must be one code span.
func name(t *testing.T, row []string) string {
	t.Helper()
	m := codeSpan.FindStringSubmatch(row[0])
	if m == nil || m[0] != row[0] {
		t.Errorf("%s: a row's first cell %q is not one `name`", configDoc, row[0])
		return ""
	}
	return m[1]
}

// TestConfigDocListsEveryKey: docs/CONFIG.md has a row for every key of the
// config file and no row for a key that does not exist, and a default
// written as one code span is the built-in default.
func TestConfigDocListsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	keys := fileKeys(reflect.TypeFor[Config](), "")
	def := reflect.ValueOf(defaults(func(string) string { return "" }, 1000, "/home/u"))
	documented := map[string]bool{}
	for _, row := range docTable(t, string(data), "Keys") {
		key := name(t, row)
		if len(row) != 3 {
			t.Errorf("%s: the row of %q has %d cells, want 3 (key, meaning, default)", configDoc, key, len(row))
			continue
		}
		if documented[key] {
			t.Errorf("%s: %q has two rows", configDoc, key)
		}
		documented[key] = true
		if !slices.Contains(keys, key) {
			t.Errorf("%s documents the key %q, which the config file does not have", configDoc, key)
			continue
		}
		// The default: one code span, unless it is derived from another
		// key ("<state_dir>/…") or none is written ("—").
		spans := codeSpan.FindAllStringSubmatch(row[2], -1)
		if len(spans) != 1 || !strings.HasPrefix(row[2], spans[0][0]) || strings.Contains(spans[0][1], "<") || strings.Contains(key, ".") {
			continue
		}
		if want := defaultString(t, def, key); spans[0][1] != want {
			t.Errorf("%s: the default of %q is written %q, but it is %q", configDoc, key, spans[0][1], want)
		}
	}
	for _, key := range keys {
		if !documented[key] {
			t.Errorf("%s lacks the config key %q: add a row (key, meaning, default) to its Keys table", configDoc, key)
		}
	}
}

// defaultString is the default of the top-level key as CONFIG.md writes it.
func defaultString(t *testing.T, def reflect.Value, key string) string {
	t.Helper()
	for i, f := range reflect.VisibleFields(def.Type()) {
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == key {
			v := def.Field(i).Interface()
			if s, ok := v.(string); ok && s == "" {
				return `""`
			}
			return fmt.Sprint(v)
		}
	}
	t.Fatalf("no field for key %q", key)
	return ""
}

// TestConfigDocListsEveryEnvVar: docs/CONFIG.md has a row for every
// variable ApplyEnv reads (EnvVars), naming an existing key, and none for a
// variable it does not read.
func TestConfigDocListsEveryEnvVar(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	keys := fileKeys(reflect.TypeFor[Config](), "")
	vars := EnvVars()
	documented := map[string]bool{}
	for _, row := range docTable(t, string(data), "Environment variables") {
		v := name(t, row)
		documented[v] = true
		if !slices.Contains(vars, v) {
			t.Errorf("%s documents the variable %s, which the configuration does not read", configDoc, v)
		}
		if len(row) < 2 {
			t.Errorf("%s: the row of %s names no key", configDoc, v)
			continue
		}
		if m := codeSpan.FindStringSubmatch(row[1]); m == nil || !slices.Contains(keys, m[1]) {
			t.Errorf("%s: the row of %s names %q, not a config key", configDoc, v, row[1])
		}
	}
	for _, v := range vars {
		if !documented[v] {
			t.Errorf("%s lacks the environment variable %s: add a row (variable, the key it sets, format) to its table", configDoc, v)
		}
	}
}
