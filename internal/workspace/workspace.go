// Package workspace manages workspace directories: the per-sandbox (or named,
// shared) host directories that user code reads from and writes to.
//
// Layout under the store's root (normally <state_dir>/workspaces):
//
//	<root>/                  0700, owned by the daemon
//	<root>/<id>/             0755, the workspace itself (what a sandbox sees)
//	<root>/<id>/data/        datasets are prepared here
//	<root>/<id>/models/
//	<root>/<id>/outputs/     artifacts
//	<root>/.meta/<id>.json   metadata {id, anonymous, created_at, quota_mb}
//	<root>/.meta/<id>.img    a workspace with a disk quota: a sparse ext4 image
//	                         mounted (loop) at <root>/<id>/ (see SetQuota)
//
// The metadata lives outside the workspace directory on purpose: sandbox code can
// write anywhere inside its workspace, and must not be able to flip the anonymous
// flag (which decides whether the directory is removed on kill) or hide the
// workspace from List by deleting a marker. IDs never start with '.', so .meta
// cannot collide with a workspace.
package workspace

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/atomicfile"
)

// Names of the subdirectories every workspace has. Code sees them relative to
// the workspace directory (WORKSPACE_DATA = <workspace>/data and so on).
const (
	// Data holds prepared datasets.
	Data = "data"
	// Models is for model files the code saves or loads.
	Models = "models"
	// Outputs holds artifacts; everything under it is reported to the caller.
	Outputs = "outputs"
)

// AnonymousPrefix starts every anonymous workspace id. Create refuses ids with
// this prefix, so a named request can never attach to (and later outlive, or
// lose to a kill) another sandbox's anonymous workspace.
const AnonymousPrefix = "anon-"

// MaxIDLen is the longest valid workspace id.
const MaxIDLen = 64

const (
	metaDir  = ".meta"
	rootPerm = 0o700 // the store root: only the daemon lists workspaces
	dirPerm  = 0o755 // inside a workspace: the sandbox user may need to read it
	filePerm = 0o600 // metadata
)

var subdirs = []string{Data, Models, Outputs}

// Store manages the workspaces under one root directory. All methods are safe
// for concurrent use; one mutex serialises them (they are short file-system
// operations, except Remove of a large workspace).
type Store struct {
	root string
	mu   sync.Mutex
}

// metadata is the on-disk record of one workspace.
type metadata struct {
	ID        string    `json:"id"`
	Anonymous bool      `json:"anonymous"`
	CreatedAt time.Time `json:"created_at"`
	// QuotaMB is set when the workspace lives in its own file system image of
	// that size.
	QuotaMB int `json:"quota_mb,omitempty"`
	// Owner is the API key id that created it ("" without keys); Grants
	// the other keys an admin let use it.
	Owner  string   `json:"owner,omitempty"`
	Grants []string `json:"grants,omitempty"`
}

// New returns a Store rooted at root, creating it (mode 0700) when missing.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, api.Errorf(api.ErrInvalid, "workspace root is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("workspace root %s: %w", root, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, metaDir), rootPerm); err != nil {
		return nil, fmt.Errorf("workspace root: %w", err)
	}
	// MkdirAll leaves an existing root's mode alone; tighten it.
	if err := os.Chmod(abs, rootPerm); err != nil {
		return nil, fmt.Errorf("workspace root: %w", err)
	}
	return &Store{root: abs}, nil
}

// Root returns the store's absolute root directory.
func (s *Store) Root() string { return s.root }

// ValidateID reports whether id is a valid workspace id: 1 to 64 characters of
// [A-Za-z0-9._-], not starting with '.' or '-'. The error wraps api.ErrInvalid.
func ValidateID(id string) error {
	if id == "" {
		return api.Errorf(api.ErrInvalid, "workspace id is empty")
	}
	if len(id) > MaxIDLen {
		return api.Errorf(api.ErrInvalid, "workspace id %.20q…: longer than %d characters", id, MaxIDLen)
	}
	if id[0] == '.' || id[0] == '-' {
		return api.Errorf(api.ErrInvalid, "workspace id %q: must not start with '.' or '-'", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return api.Errorf(api.ErrInvalid, "workspace id %q: only letters, digits, '.', '_' and '-' are allowed", id)
		}
	}
	return nil
}

// Path returns the directory of workspace id, whether or not it exists, or ""
// when id is not a valid id (so a bad id can never name a path outside the root).
func (s *Store) Path(id string) string {
	if ValidateID(id) != nil {
		return ""
	}
	return filepath.Join(s.root, id)
}

// Create creates the named workspace, owned by owner (an API key id), or
// attaches to it when it exists: an existing workspace is returned as it is
// (its metadata, owner included, unchanged; whether the caller may use it is
// the manager's decision), but any missing data/, models/ or outputs/ is
// re-created. A directory left without metadata (a crash between the two
// steps) is adopted. Errors: api.ErrInvalid for a bad id or one with
// AnonymousPrefix.
func (s *Store) Create(id, owner string) (api.Workspace, error) {
	if err := ValidateID(id); err != nil {
		return api.Workspace{}, err
	}
	if strings.HasPrefix(id, AnonymousPrefix) {
		return api.Workspace{}, api.Errorf(api.ErrInvalid, "workspace id %q: the prefix %q is reserved for anonymous workspaces", id, AnonymousPrefix)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.create(id, owner, false, false)
}

// CreateAnonymous creates a new workspace, owned by owner, with a random id
// (AnonymousPrefix and 12 hex digits) and Anonymous set: the manager removes
// it when its sandbox ends.
func (s *Store) CreateAnonymous(owner string) (api.Workspace, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 8 {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return api.Workspace{}, fmt.Errorf("workspace id: %w", err)
		}
		ws, err := s.create(AnonymousPrefix+hex.EncodeToString(b[:]), owner, true, true)
		if errors.Is(err, api.ErrExists) {
			continue // astronomically unlikely; draw again
		}
		return ws, err
	}
	return api.Workspace{}, fmt.Errorf("anonymous workspace: no free id after 8 tries")
}

// create makes or attaches workspace id; with exclusive, an existing directory
// is api.ErrExists. The caller holds s.mu.
func (s *Store) create(id, owner string, anonymous, exclusive bool) (api.Workspace, error) {
	dir := filepath.Join(s.root, id)
	if exclusive {
		if err := os.Mkdir(dir, dirPerm); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return api.Workspace{}, api.Errorf(api.ErrExists, "workspace %s", id)
			}
			return api.Workspace{}, fmt.Errorf("workspace %s: %w", id, err)
		}
	}
	existed := false
	if !exclusive {
		if err := os.Mkdir(dir, dirPerm); errors.Is(err, fs.ErrExist) {
			existed = true
		} else if err != nil {
			return api.Workspace{}, fmt.Errorf("workspace %s: %w", id, err)
		}
	}
	if fi, err := os.Lstat(dir); err != nil {
		return api.Workspace{}, fmt.Errorf("workspace %s: %w", id, err)
	} else if !fi.IsDir() {
		return api.Workspace{}, fmt.Errorf("workspace %s: %s is not a directory; remove it", id, dir)
	}
	m, err := s.readMeta(id)
	switch {
	case err == nil:
		if err := makeSubdirs(dir); err != nil {
			return api.Workspace{}, fmt.Errorf("workspace %s: %w", id, err)
		}
		return s.workspace(m), nil
	case !errors.Is(err, api.ErrNotFound):
		return api.Workspace{}, err
	}
	// A directory without metadata is adopted only when it holds nothing
	// (a crash between making it and writing its metadata): one with files
	// is what a failed Remove left (its metadata goes first), and its files
	// were another owner's.
	if existed && !emptyWorkspace(dir) {
		return api.Workspace{}, api.Errorf(api.ErrExists, "workspace %s: its directory %s is left without metadata and is not empty (a removal that failed?); an operator must remove it", id, dir)
	}
	if err := makeSubdirs(dir); err != nil {
		return api.Workspace{}, fmt.Errorf("workspace %s: %w", id, err)
	}
	m = metadata{ID: id, Anonymous: anonymous, CreatedAt: time.Now().UTC(), Owner: owner}
	if err := s.writeMeta(m); err != nil {
		return api.Workspace{}, err
	}
	return s.workspace(m), nil
}

// emptyWorkspace reports whether dir holds nothing but empty standard
// subdirectories.
func emptyWorkspace(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !e.IsDir() || !slices.Contains(subdirs, e.Name()) {
			return false
		}
		if sub, err := os.ReadDir(filepath.Join(dir, e.Name())); err != nil || len(sub) > 0 {
			return false
		}
	}
	return true
}

// makeSubdirs creates the standard subdirectories inside dir through an
// os.Root, so a symlink planted by sandbox code (data -> /etc) is not followed
// out of the workspace.
func makeSubdirs(dir string) error {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, sub := range subdirs {
		if err := r.Mkdir(sub, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s/: %w", sub, err)
		}
	}
	return nil
}

// Get returns workspace id. Errors: api.ErrInvalid for a bad id, api.ErrNotFound
// when the directory or its metadata is missing.
func (s *Store) Get(id string) (api.Workspace, error) {
	if err := ValidateID(id); err != nil {
		return api.Workspace{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if fi, err := os.Lstat(filepath.Join(s.root, id)); err != nil || !fi.IsDir() {
		return api.Workspace{}, api.Errorf(api.ErrNotFound, "workspace %s", id)
	}
	m, err := s.readMeta(id)
	if err != nil {
		return api.Workspace{}, err
	}
	return s.workspace(m), nil
}

// List returns every workspace, sorted by id. Directories without metadata are
// not workspaces and are skipped; so are entries whose metadata cannot be read
// (Get reports the problem), so that one damaged workspace never breaks listing.
func (s *Store) List() ([]api.Workspace, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	out := []api.Workspace{}
	for _, e := range entries {
		if !e.IsDir() || ValidateID(e.Name()) != nil {
			continue
		}
		m, err := s.readMeta(e.Name())
		if err != nil {
			continue
		}
		out = append(out, s.workspace(m))
	}
	slices.SortFunc(out, func(a, b api.Workspace) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Remove deletes workspace id and everything in it. The metadata goes first, so
// a half-finished removal leaves an unlisted directory that Create adopts.
// Errors: api.ErrInvalid, api.ErrNotFound.
func (s *Store) Remove(id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.root, id)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return api.Errorf(api.ErrNotFound, "workspace %s", id)
	}
	// A quota workspace's image is unmounted first: its files go with the
	// image, and the directory under it is only a mount point.
	if err := unmount(dir); err != nil {
		return fmt.Errorf("remove workspace %s: %w", id, err)
	}
	if err := os.Remove(s.metaPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove workspace %s: %w", id, err)
	}
	if err := os.Remove(s.imagePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove workspace %s: %w", id, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove workspace %s: %w", id, err)
	}
	return nil
}

// SetGrant lets key use workspace id (grant) or no longer (!grant). The
// owner needs no grant. Errors: api.ErrInvalid, api.ErrNotFound.
func (s *Store) SetGrant(id, key string, grant bool) (api.Workspace, error) {
	if err := ValidateID(id); err != nil {
		return api.Workspace{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.readMeta(id)
	if err != nil {
		return api.Workspace{}, err
	}
	has := slices.Contains(m.Grants, key)
	switch {
	case grant && !has:
		m.Grants = append(m.Grants, key)
		slices.Sort(m.Grants)
	case !grant && has:
		m.Grants = slices.DeleteFunc(m.Grants, func(k string) bool { return k == key })
	default:
		return s.workspace(m), nil
	}
	if err := s.writeMeta(m); err != nil {
		return api.Workspace{}, err
	}
	return s.workspace(m), nil
}

func (s *Store) workspace(m metadata) api.Workspace {
	return api.Workspace{ID: m.ID, Path: filepath.Join(s.root, m.ID), Anonymous: m.Anonymous, CreatedAt: m.CreatedAt,
		Owner: m.Owner, Grants: slices.Clone(m.Grants)}
}

func (s *Store) metaPath(id string) string  { return filepath.Join(s.root, metaDir, id+".json") }
func (s *Store) imagePath(id string) string { return filepath.Join(s.root, metaDir, id+".img") }

// readMeta returns api.ErrNotFound when the metadata file is missing and a
// plain error naming the file when it is damaged.
func (s *Store) readMeta(id string) (metadata, error) {
	p := s.metaPath(id)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return metadata{}, api.Errorf(api.ErrNotFound, "workspace %s", id)
	}
	if err != nil {
		return metadata{}, fmt.Errorf("workspace %s: %w", id, err)
	}
	var m metadata
	if err := json.Unmarshal(b, &m); err != nil {
		return metadata{}, fmt.Errorf("workspace %s: metadata %s is damaged (%v); remove it and call create again to re-adopt the directory", id, p, err)
	}
	if m.ID != id {
		return metadata{}, fmt.Errorf("workspace %s: metadata %s names workspace %q; remove it and call create again to re-adopt the directory", id, p, m.ID)
	}
	return m, nil
}

// writeMeta writes the metadata atomically: a temporary file in the same
// directory, fsynced, then renamed over the old one.
func (s *Store) writeMeta(m metadata) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.metaPath(m.ID), append(b, '\n'), filePerm); err != nil {
		return fmt.Errorf("workspace %s: write metadata: %w", m.ID, err)
	}
	return nil
}

// SetOwner gives workspace id to owner: a warm pool's sandbox is made with
// an anonymous workspace that belongs to nobody, and the key that claims
// the sandbox gets it. Errors: api.ErrInvalid, api.ErrNotFound.
func (s *Store) SetOwner(id, owner string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.readMeta(id)
	if err != nil {
		return err
	}
	if m.Owner == owner {
		return nil
	}
	m.Owner = owner
	return s.writeMeta(m)
}
