package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/ds-sandbox/ds-sandbox/api"
)

const (
	storedFilePerm = 0o444 // registry files: read-only, also through hard links
	storedDirPerm  = 0o755
	copyBufSize    = 1 << 20
)

// digest is a dataset checksum: for a file the sha256 of its bytes; for a
// directory the sha256 of its sorted "relpath\x00filesha\n" lines (slash
// separated; empty directories do not count). size is the total bytes.
type digest struct {
	sha256 string
	size   int64
}

// copyFile streams src into a new file dst (which must not exist), hashing the
// bytes written, and fsyncs it.
func copyFile(src, dst string, perm os.FileMode) (digest, error) {
	in, err := os.Open(src)
	if err != nil {
		return digest{}, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return digest{}, err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(out, h), in, make([]byte, copyBufSize))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(dst, perm)
	}
	if err != nil {
		return digest{}, err
	}
	return digest{hex.EncodeToString(h.Sum(nil)), n}, nil
}

// hashFile streams p through sha256.
func hashFile(p string) (digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return digest{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, copyBufSize))
	if err != nil {
		return digest{}, err
	}
	return digest{hex.EncodeToString(h.Sum(nil)), n}, nil
}

// walkTree calls fn for every directory and regular file under root (root
// itself excluded) with its root-relative path, refusing symbolic links and
// special files with api.ErrInvalid naming the entry.
func walkTree(root string, fn func(rel string, isDir bool) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		switch t := d.Type(); {
		case t&fs.ModeSymlink != 0:
			return api.Errorf(api.ErrInvalid, "%s is a symbolic link: datasets may not contain links; copy the target in instead", p)
		case t.IsDir():
			return fn(rel, true)
		case t.IsRegular():
			return fn(rel, false)
		default:
			return api.Errorf(api.ErrInvalid, "%s is not a regular file or directory", p)
		}
	})
}

// treeDigest combines per-file digests keyed by slash-separated relative path.
func treeDigest(files map[string]digest) digest {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	h := sha256.New()
	var size int64
	for _, p := range paths {
		fmt.Fprintf(h, "%s\x00%s\n", p, files[p].sha256)
		size += files[p].size
	}
	return digest{hex.EncodeToString(h.Sum(nil)), size}
}

// copyTree copies the contents of directory src into the existing directory dst.
func copyTree(src, dst string) (digest, error) {
	files := map[string]digest{}
	err := walkTree(src, func(rel string, isDir bool) error {
		if isDir {
			return os.Mkdir(filepath.Join(dst, rel), storedDirPerm)
		}
		d, err := copyFile(filepath.Join(src, rel), filepath.Join(dst, rel), storedFilePerm)
		files[filepath.ToSlash(rel)] = d
		return err
	})
	if err != nil {
		return digest{}, err
	}
	return treeDigest(files), nil
}

// hashTree computes the digest copyTree would have returned for dir.
func hashTree(dir string) (digest, error) {
	files := map[string]digest{}
	err := walkTree(dir, func(rel string, isDir bool) error {
		if isDir {
			return nil
		}
		d, err := hashFile(filepath.Join(dir, rel))
		files[filepath.ToSlash(rel)] = d
		return err
	})
	if err != nil {
		return digest{}, err
	}
	return treeDigest(files), nil
}
