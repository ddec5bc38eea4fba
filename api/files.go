package api

import "time"

// File types in EntryInfo.Type.
const (
	FileTypeFile    = "file"
	FileTypeDir     = "dir"
	FileTypeSymlink = "symlink"
	FileTypeOther   = "other"
)

// EntryInfo describes one file or directory inside a sandbox. Path is the path as
// the sandbox's code sees it (absolute, e.g. /home/user/data/a.csv).
type EntryInfo struct {
	Name          string    `json:"name"`
	Path          string    `json:"path"`
	Type          string    `json:"type"`
	Size          int64     `json:"size"`
	Mode          uint32    `json:"mode"`
	Permissions   string    `json:"permissions"`
	ModifiedTime  time.Time `json:"modified_time"`
	SymlinkTarget string    `json:"symlink_target,omitempty"`
}

// IsDir reports whether the entry is a directory.
func (e EntryInfo) IsDir() bool { return e.Type == FileTypeDir }

// RenameRequest moves a file or directory inside the sandbox.
type RenameRequest struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Filesystem event operations in FilesystemEvent.Op.
const (
	FsCreate = "create"
	FsWrite  = "write"
	FsRemove = "remove"
	FsRename = "rename"
	FsChmod  = "chmod"
)

// FilesystemEvent is one change seen by a directory watch.
type FilesystemEvent struct {
	// Name is the changed entry's path relative to the watched directory.
	Name string `json:"name"`
	// Path is its absolute path inside the sandbox.
	Path string `json:"path"`
	Op   string `json:"op"`
}
