// Package dataset is the dataset registry: named copies of host files and
// directories that can be placed into workspaces (under data/) before code runs.
//
// Layout under the registry directory (normally <state_dir>/datasets):
//
//	<dir>/.index.json      the index: one entry per dataset, written atomically
//	<dir>/<name>/<file>    a file dataset keeps its original base name
//	<dir>/<name>/...       a directory dataset is copied recursively
//	<dir>/.staging-*       registrations in progress
//
// Names never start with '.', so the index and staging directories cannot
// collide with a dataset. The index is replaced by temp file + fsync + rename,
// so a failed or interrupted Register never damages it (the seed's registry
// wrote a bad entry before validating and broke every later listing).
//
// Stored files are read-only (0444): the "link" strategy hard-links them into
// workspaces, and a sandbox user that does not own them cannot modify the
// registry's copy through the link. Verify detects any change that happens
// anyway.
//
// A Registry serialises its own callers; several processes sharing one
// directory are safe for reads, but concurrent writers in different processes
// may lose an index update (last rename wins).
package dataset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// ErrChecksumMismatch is wrapped by Verify when the stored files no longer hash
// to the recorded checksum or size.
var ErrChecksumMismatch = errors.New("checksum mismatch")

// MaxNameLen is the longest valid dataset name.
const MaxNameLen = 64

// Format names. Detection is by file extension; anything else is FormatUnknown,
// which is not an error.
const (
	FormatCSV     = "csv"
	FormatTSV     = "tsv"
	FormatParquet = "parquet"
	FormatJSON    = "json"
	FormatExcel   = "excel"
	FormatFeather = "feather"
	FormatText    = "text"
	FormatDir     = "dir"
	FormatUnknown = "unknown"
)

const (
	indexName     = ".index.json"
	indexVersion  = 1
	stagingPrefix = ".staging-"
)

// Registry is a dataset registry over one directory. Its methods are safe for
// concurrent use: a RWMutex lets Get, List, Verify and Prepare run together,
// while Register (its final step) and Remove are exclusive.
type Registry struct {
	dir string
	mu  sync.RWMutex
}

// Filter selects datasets in List. Zero fields match everything.
type Filter struct {
	// NameContains matches names containing it, ignoring case.
	NameContains string
	// Tags must all be present on a dataset.
	Tags []string
	// Format matches the detected format exactly (csv, parquet, dir, ...).
	Format string
}

// entry is one dataset in the index.
type entry struct {
	api.Dataset
	// Source is the absolute host path the dataset was copied from.
	Source string `json:"source"`
	// File is a file dataset's base name; "" for a directory dataset.
	File string `json:"file,omitempty"`
}

// index is the on-disk index, entries sorted by name.
type index struct {
	Version  int     `json:"version"`
	Datasets []entry `json:"datasets"`
}

// Open opens (creating when missing, mode 0700) the registry in dir. A corrupt
// index is an error naming the file; nothing is overwritten.
func Open(dir string) (*Registry, error) {
	if dir == "" {
		return nil, api.Errorf(api.ErrInvalid, "dataset registry directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dataset registry %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("dataset registry: %w", err)
	}
	r := &Registry{dir: abs}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// Dir returns the registry's absolute directory.
func (r *Registry) Dir() string { return r.dir }

// ValidateName reports whether name is a valid dataset name: 1 to 64 characters
// of [A-Za-z0-9._-], not starting with '.' or '-'. The error wraps api.ErrInvalid.
func ValidateName(name string) error {
	switch {
	case name == "":
		return api.Errorf(api.ErrInvalid, "dataset name is empty")
	case len(name) > MaxNameLen:
		return api.Errorf(api.ErrInvalid, "dataset name %.20q…: longer than %d characters", name, MaxNameLen)
	case name[0] == '.' || name[0] == '-':
		return api.Errorf(api.ErrInvalid, "dataset name %q: must not start with '.' or '-'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return api.Errorf(api.ErrInvalid, "dataset name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// MaxFileNameLen bounds a dataset file's name (the usual NAME_MAX).
const MaxFileNameLen = 255

// ValidateFileName reports whether name is a valid name for a one-file
// dataset's file: a plain file name (no '/'), 1 to 255 bytes of valid UTF-8
// without control characters, not starting with '.'. The error wraps
// api.ErrInvalid.
func ValidateFileName(name string) error {
	switch {
	case name == "":
		return api.Errorf(api.ErrInvalid, "file name is empty")
	case len(name) > MaxFileNameLen:
		return api.Errorf(api.ErrInvalid, "file name %.20q…: longer than %d bytes", name, MaxFileNameLen)
	case !utf8.ValidString(name):
		return api.Errorf(api.ErrInvalid, "file name %q is not valid UTF-8", name)
	case strings.ContainsAny(name, "/\\") || name[0] == '.':
		return api.Errorf(api.ErrInvalid, "file name %q must be a plain file name (no '/' or backslash, not starting with '.')", name)
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return api.Errorf(api.ErrInvalid, "file name %q contains a control character", name)
		}
	}
	return nil
}

// DetectFormat returns the format of a file from its extension (case
// insensitive): .csv csv, .tsv tsv, .parquet parquet, .json/.jsonl json,
// .xlsx/.xls excel, .feather/.fst feather, .txt text, anything else unknown.
func DetectFormat(filename string) string {
	switch strings.ToLower(filepath.Ext(filename)) {
	case ".csv":
		return FormatCSV
	case ".tsv":
		return FormatTSV
	case ".parquet":
		return FormatParquet
	case ".json", ".jsonl":
		return FormatJSON
	case ".xlsx", ".xls":
		return FormatExcel
	case ".feather", ".fst":
		return FormatFeather
	case ".txt":
		return FormatText
	}
	return FormatUnknown
}

// Get returns dataset name. Errors: api.ErrInvalid, api.ErrNotFound.
func (r *Registry) Get(name string) (api.Dataset, error) {
	e, err := r.get(name)
	return e.Dataset, err
}

func (r *Registry) get(name string) (entry, error) {
	if err := ValidateName(name); err != nil {
		return entry{}, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.find(name)
}

// find looks name up in a fresh read of the index; the caller holds r.mu.
func (r *Registry) find(name string) (entry, error) {
	idx, err := r.load()
	if err != nil {
		return entry{}, err
	}
	i, ok := slices.BinarySearchFunc(idx.Datasets, name, func(e entry, n string) int { return strings.Compare(e.Name, n) })
	if !ok {
		return entry{}, api.Errorf(api.ErrNotFound, "dataset %s", name)
	}
	return idx.Datasets[i], nil
}

// List returns the datasets matching f, sorted by name.
func (r *Registry) List(f Filter) ([]api.Dataset, error) {
	r.mu.RLock()
	idx, err := r.load()
	r.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	needle := strings.ToLower(f.NameContains)
	out := []api.Dataset{}
	for _, e := range idx.Datasets {
		if !strings.Contains(strings.ToLower(e.Name), needle) || f.Format != "" && e.Format != f.Format {
			continue
		}
		if !containsAll(e.Tags, f.Tags) {
			continue
		}
		out = append(out, e.Dataset)
	}
	return out, nil
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// Remove deletes dataset name: first from the index, then its files, so an
// interrupted Remove leaves at worst an unlisted directory (which a later
// Register of the same name replaces). Errors: api.ErrInvalid, api.ErrNotFound.
func (r *Registry) Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	idx, err := r.load()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(idx.Datasets, func(e entry) bool { return e.Name == name })
	if i < 0 {
		return api.Errorf(api.ErrNotFound, "dataset %s", name)
	}
	idx.Datasets = slices.Delete(idx.Datasets, i, i+1)
	if err := r.save(idx); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(r.dir, name)); err != nil {
		return fmt.Errorf("dataset %s: removed from the index, but its files remain: %w", name, err)
	}
	return nil
}

// SetPublic makes dataset name visible to every key (public) or only to its
// owner and admins again. Errors: api.ErrInvalid, api.ErrNotFound.
func (r *Registry) SetPublic(name string, public bool) (api.Dataset, error) {
	if err := ValidateName(name); err != nil {
		return api.Dataset{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	idx, err := r.load()
	if err != nil {
		return api.Dataset{}, err
	}
	i := slices.IndexFunc(idx.Datasets, func(e entry) bool { return e.Name == name })
	if i < 0 {
		return api.Dataset{}, api.Errorf(api.ErrNotFound, "dataset %s", name)
	}
	if idx.Datasets[i].Public != public {
		idx.Datasets[i].Public = public
		if err := r.save(idx); err != nil {
			return api.Dataset{}, err
		}
	}
	return idx.Datasets[i].Dataset, nil
}

// Verify recomputes the checksum and size of the stored copy of dataset name.
// Errors: api.ErrInvalid, api.ErrNotFound, ErrChecksumMismatch (with both
// digests), or the I/O error that stopped hashing.
func (r *Registry) Verify(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, err := r.find(name)
	if err != nil {
		return err
	}
	var sum digest
	if e.IsDir {
		sum, err = hashTree(filepath.Join(r.dir, name))
	} else {
		sum, err = hashFile(filepath.Join(r.dir, name, e.File))
	}
	if err != nil {
		return fmt.Errorf("dataset %s: verify: %w", name, err)
	}
	if sum.sha256 != e.SHA256 || sum.size != e.Size {
		return fmt.Errorf("dataset %s: %w: the index has sha256 %s (%d bytes), the stored files hash to %s (%d bytes)",
			name, ErrChecksumMismatch, e.SHA256, e.Size, sum.sha256, sum.size)
	}
	return nil
}

// now is the clock of RegisteredAt.
func now() time.Time { return time.Now().UTC().Truncate(time.Second) }
