package template

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/atomicfile"
	"go.yaml.in/yaml/v3"
)

// Load returns template id from the first of dirs that has <id>.yaml or
// <id>.yml (tried in that order in each directory). Empty entries in dirs are
// skipped. Errors: api.ErrInvalid for a bad id or a malformed file (naming the
// file and line), api.ErrNotFound naming the id and every directory searched.
func Load(dirs []string, id string) (api.Template, error) {
	if err := ValidateID(id); err != nil {
		return api.Template{}, err
	}
	var searched []string
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		searched = append(searched, dir)
		for _, ext := range extensions {
			p := filepath.Join(dir, id+ext)
			data, err := readFile(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return api.Template{}, err
			}
			return Parse(data, p)
		}
	}
	if len(searched) == 0 {
		return api.Template{}, api.Errorf(api.ErrNotFound, "template %q: no template directories are configured", id)
	}
	return api.Template{}, api.Errorf(api.ErrNotFound, "template %q: no %s.yaml or %s.yml in %s", id, id, id, strings.Join(searched, ", "))
}

// List returns every template in dirs, sorted by id; when an id appears more than
// once, the first directory wins (as in Load) and the shadowed files are not read.
// Missing directories are skipped. Files whose names do not end in .yaml or .yml,
// and dotfiles, are ignored.
//
// A malformed file does not hide the others: List returns every template it
// could read together with a non-nil error (errors.Join) naming each bad file.
// Callers that want all-or-nothing treat any error as failure; a listing UI can
// show both.
func List(dirs []string) ([]api.Template, error) {
	seen := map[string]bool{}
	out := []api.Template{}
	var errs []error
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("template directory %s: %w", dir, err))
			continue
		}
		// ReadDir sorts by name, so for each id the .yaml file comes before .yml.
		for _, e := range entries {
			name := e.Name()
			id, ok := fileID(name)
			if !ok || strings.HasPrefix(name, ".") || e.IsDir() || seen[id] {
				continue
			}
			p := filepath.Join(dir, name)
			if err := ValidateID(id); err != nil {
				errs = append(errs, fmt.Errorf("%s: the file name is not a valid template id: %w", p, err))
				continue
			}
			seen[id] = true
			data, err := readFile(p)
			if err == nil {
				var t api.Template
				if t, err = Parse(data, p); err == nil {
					out = append(out, t)
					continue
				}
			}
			errs = append(errs, err)
		}
	}
	slices.SortFunc(out, func(a, b api.Template) int { return strings.Compare(a.ID, b.ID) })
	return out, errors.Join(errs...)
}

// readFile reads at most MaxSize bytes of p; a larger file is api.ErrLimit.
func readFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read template %s: %w", p, err)
	}
	if len(data) > MaxSize {
		return nil, api.Errorf(api.ErrLimit, "template %s: larger than %d bytes", p, MaxSize)
	}
	return data, nil
}

// Save validates t and writes it to <dir>/<id>.yaml atomically (temporary file,
// fsync, rename), creating dir when missing. Zero-valued fields are left out of
// the file. An existing file for the id is replaced. Errors: api.ErrInvalid from
// Validate.
func Save(dir string, t api.Template) error {
	if err := Validate(t); err != nil {
		return err
	}
	data, err := Marshal(t)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save template %s: %w", t.ID, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, t.ID+".yaml"), data, 0o644); err != nil {
		return fmt.Errorf("save template %s: %w", t.ID, err)
	}
	return nil
}

// Marshal encodes t as YAML in the file format, leaving out zero-valued fields
// (the id is always written).
func Marshal(t api.Template) ([]byte, error) {
	var doc yaml.Node
	if err := doc.Encode(t); err != nil {
		return nil, fmt.Errorf("encode template %s: %w", t.ID, err)
	}
	if doc.Kind == yaml.MappingNode {
		kept := doc.Content[:0]
		for i := 0; i+1 < len(doc.Content); i += 2 {
			k, v := doc.Content[i], doc.Content[i+1]
			if k.Value != "id" && isZero(v) {
				continue
			}
			kept = append(kept, k, v)
		}
		doc.Content = kept
	}
	return yaml.Marshal(&doc)
}

func isZero(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.MappingNode, yaml.SequenceNode:
		return len(n.Content) == 0
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return true
		case "!!str":
			return n.Value == ""
		case "!!int":
			return n.Value == "0"
		case "!!bool":
			return n.Value == "false"
		}
	}
	return false
}
