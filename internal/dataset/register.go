package dataset

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/atomicfile"
)

// MaxTagLen is the longest valid tag.
const MaxTagLen = 64

// Register copies source (a host file or directory; absolute, or relative to the
// working directory) into the registry as dataset name and records it in the
// index. A file keeps its base name (<dir>/<name>/<base>); a directory is copied
// recursively and must contain only directories and regular files: a symbolic
// link or special file anywhere in it is refused, naming the entry, because
// copying it would either leak its target or leave a dangling link. Copying and
// hashing stream the data; nothing is read whole.
//
// Tags are trimmed and de-duplicated; an empty tag is refused. An unknown file
// extension gives format "unknown", which is not an error.
//
// Errors: api.ErrInvalid (bad name, tag, or source kind), api.ErrNotFound (no
// such source), api.ErrExists (the name is taken: Remove it first to replace it).
// On any error the index is left as it was.
func (r *Registry) Register(source, name, description string, tags []string) (api.Dataset, error) {
	return r.RegisterAs("", source, name, description, tags)
}

// RegisterAs is Register recording owner (an API key id) as the dataset's
// owner; who may see it is the manager's decision.
func (r *Registry) RegisterAs(owner, source, name, description string, tags []string) (api.Dataset, error) {
	if err := ValidateName(name); err != nil {
		return api.Dataset{}, err
	}
	tags, err := normalizeTags(tags)
	if err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: %w", name, err)
	}
	if source == "" {
		return api.Dataset{}, api.Errorf(api.ErrInvalid, "dataset %s: source path is empty", name)
	}
	src, err := filepath.Abs(source)
	if err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: source %s: %w", name, source, err)
	}
	resolved, err := filepath.EvalSymlinks(src) // a link as the source itself is fine
	if errors.Is(err, fs.ErrNotExist) {
		return api.Dataset{}, api.Errorf(api.ErrNotFound, "dataset %s: source %s does not exist", name, src)
	}
	if err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: source: %w", name, err)
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: source: %w", name, err)
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		return api.Dataset{}, api.Errorf(api.ErrInvalid, "dataset %s: source %s is not a regular file or a directory", name, src)
	}
	// Fail fast before copying gigabytes; checked again under the lock.
	if _, err := r.get(name); err == nil {
		return api.Dataset{}, api.Errorf(api.ErrExists, "dataset %s: remove it first to register a new version", name)
	} else if !errors.Is(err, api.ErrNotFound) {
		return api.Dataset{}, err
	}

	stage, err := os.MkdirTemp(r.dir, stagingPrefix+"*")
	if err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: %w", name, err)
	}
	defer os.RemoveAll(stage) // nothing left to remove after the rename
	e := entry{
		Dataset: api.Dataset{Name: name, Description: description, Tags: tags, RegisteredAt: now(), Owner: owner},
		Source:  src,
	}
	var sum digest
	if fi.IsDir() {
		e.IsDir, e.Format = true, FormatDir
		sum, err = copyTree(resolved, stage)
	} else {
		e.File = filepath.Base(src)
		e.Format = DetectFormat(e.File)
		sum, err = copyFile(resolved, filepath.Join(stage, e.File), storedFilePerm)
	}
	if err == nil {
		err = os.Chmod(stage, storedDirPerm)
	}
	if err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: copy %s: %w", name, src, err)
	}
	e.SHA256, e.Size = sum.sha256, sum.size

	r.mu.Lock()
	defer r.mu.Unlock()
	idx, err := r.load()
	if err != nil {
		return api.Dataset{}, err
	}
	i, found := slices.BinarySearchFunc(idx.Datasets, name, func(e entry, n string) int { return strings.Compare(e.Name, n) })
	if found {
		return api.Dataset{}, api.Errorf(api.ErrExists, "dataset %s: remove it first to register a new version", name)
	}
	dest := filepath.Join(r.dir, name)
	// A directory without an index entry is left over from an interrupted Remove.
	if err := os.RemoveAll(dest); err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: clear leftover %s: %w", name, dest, err)
	}
	if err := os.Rename(stage, dest); err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: %w", name, err)
	}
	idx.Datasets = slices.Insert(idx.Datasets, i, e)
	if err := r.save(idx); err != nil {
		os.RemoveAll(dest)
		return api.Dataset{}, err
	}
	return e.Dataset, nil
}

func normalizeTags(tags []string) ([]string, error) {
	var out []string
	for _, t := range tags {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
			return nil, api.Errorf(api.ErrInvalid, "a tag is empty")
		case len(t) > MaxTagLen:
			return nil, api.Errorf(api.ErrInvalid, "tag %.20q…: longer than %d characters", t, MaxTagLen)
		case strings.ContainsFunc(t, func(r rune) bool { return r < ' ' || r == 0x7f }):
			return nil, api.Errorf(api.ErrInvalid, "tag %q: contains a control character", t)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// load reads and checks the index; a missing index is an empty registry.
func (r *Registry) load() (index, error) {
	p := filepath.Join(r.dir, indexName)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return index{Version: indexVersion}, nil
	}
	if err != nil {
		return index{}, fmt.Errorf("dataset index: %w", err)
	}
	var idx index
	if err := json.Unmarshal(b, &idx); err != nil {
		return index{}, corrupt(p, err)
	}
	if idx.Version != indexVersion {
		return index{}, corrupt(p, fmt.Errorf("version %d, want %d", idx.Version, indexVersion))
	}
	slices.SortFunc(idx.Datasets, func(a, b entry) int { return strings.Compare(a.Name, b.Name) })
	for i, e := range idx.Datasets {
		if err := ValidateName(e.Name); err != nil {
			return index{}, corrupt(p, err)
		}
		if i > 0 && idx.Datasets[i-1].Name == e.Name {
			return index{}, corrupt(p, fmt.Errorf("dataset %s is listed twice", e.Name))
		}
		if !e.IsDir && (e.File == "" || e.File != filepath.Base(e.File) || e.File == "." || e.File == "..") {
			return index{}, corrupt(p, fmt.Errorf("dataset %s: bad file name %q", e.Name, e.File))
		}
	}
	return idx, nil
}

func corrupt(p string, reason error) error {
	return fmt.Errorf("dataset index %s is corrupt (%v): restore it from a backup, or move it away to start an empty index (the dataset directories are kept)", p, reason)
}

// save writes the index atomically: temp file, fsync, rename, fsync directory.
func (r *Registry) save(idx index) error {
	idx.Version = indexVersion
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("dataset index: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(r.dir, indexName), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("dataset index: %w", err)
	}
	return nil
}
