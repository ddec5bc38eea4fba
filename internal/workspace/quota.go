package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// A disk quota for a workspace is its own file system: a sparse ext4 image
// of the quota's size in the store's .meta directory, loop-mounted at the
// workspace directory. Writes past the quota fail with ENOSPC inside the
// image, and the host's disk holds no more than the image's size. The host's
// file system need not support project quotas, but mounting needs root (and
// loop devices and mkfs.ext4), so SetQuota is refused elsewhere.
//
// The image outlives the mount: Unmount (at kill) keeps it, so a named
// workspace keeps its files and its quota for the next sandbox; Remove
// deletes both. A mount outlives the daemon, so a restarted daemon finds its
// sandboxes' workspaces still mounted; Mount of a mounted workspace is a
// no-op.

// SetQuota gives workspace id a disk quota of mb MiB and mounts it, or
// mounts the quota it already has. A workspace that has no quota yet gets one
// only while it is empty (its standard subdirectories aside): files already
// there would be hidden under the new file system. Asking for another size
// than the workspace has is api.ErrInvalid; a host that cannot mount images
// is api.ErrUnsupported.
func (s *Store) SetQuota(id string, mb int) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.readMeta(id)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.root, id)
	switch {
	case m.QuotaMB != 0 && mb != 0 && mb != m.QuotaMB:
		return api.Errorf(api.ErrInvalid, "workspace %s has a disk quota of %d MiB; ask for that (or none) to attach it, not %d MiB", id, m.QuotaMB, mb)
	case m.QuotaMB != 0:
		return s.mountLocked(m)
	case mb == 0:
		return nil
	}
	if err := quotaSupported(); err != nil {
		return err
	}
	if empty, err := onlySubdirs(dir); err != nil {
		return fmt.Errorf("workspace %s: %w", id, err)
	} else if !empty {
		return api.Errorf(api.ErrInvalid, "workspace %s already holds files without a disk quota; a quota can only be given to a new (empty) workspace", id)
	}
	img := s.imagePath(id)
	if err := makeImage(img, mb); err != nil {
		os.Remove(img)
		return fmt.Errorf("workspace %s: disk quota: %w", id, err)
	}
	m.QuotaMB = mb
	if err := s.writeMeta(m); err != nil {
		os.Remove(img)
		return err
	}
	return s.mountLocked(m)
}

// Quota returns workspace id's disk quota in MiB (0 = none).
func (s *Store) Quota(id string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.readMeta(id)
	return m.QuotaMB, err
}

// Unmount unmounts workspace id's image, keeping it (and its files) for the
// next Mount. A workspace without a quota, or not mounted, is left alone.
func (s *Store) Unmount(id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return unmount(filepath.Join(s.root, id))
}

// mountLocked mounts m's image at its directory unless it is mounted, and
// makes sure the standard subdirectories exist in it. The caller holds s.mu.
func (s *Store) mountLocked(m metadata) error {
	dir := filepath.Join(s.root, m.ID)
	mounted, err := isMountPoint(dir)
	if err != nil {
		return fmt.Errorf("workspace %s: %w", m.ID, err)
	}
	if !mounted {
		if _, err := os.Stat(s.imagePath(m.ID)); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("workspace %s: its disk image %s is missing", m.ID, s.imagePath(m.ID))
		}
		if err := mountImage(s.imagePath(m.ID), dir); err != nil {
			return fmt.Errorf("workspace %s: mount its disk image: %w", m.ID, err)
		}
	}
	if err := os.Chmod(dir, dirPerm); err != nil {
		return fmt.Errorf("workspace %s: %w", m.ID, err)
	}
	_ = os.Remove(filepath.Join(dir, "lost+found"))
	if err := makeSubdirs(dir); err != nil {
		return fmt.Errorf("workspace %s: %w", m.ID, err)
	}
	return nil
}

// onlySubdirs reports whether dir holds nothing but empty standard
// subdirectories.
func onlySubdirs(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if !e.IsDir() || !isSubdir(e.Name()) {
			return false, nil
		}
		sub, err := os.ReadDir(filepath.Join(dir, e.Name()))
		if err != nil || len(sub) > 0 {
			return false, err
		}
	}
	return true, nil
}

func isSubdir(name string) bool {
	for _, s := range subdirs {
		if s == name {
			return true
		}
	}
	return false
}
