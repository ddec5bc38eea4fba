package dssandbox

import "github.com/ds-sandbox/ds-sandbox/client"

type (
	// Files reads and writes a sandbox's filesystem, as the sandbox's code sees it.
	// Relative paths resolve against the workdir; a path that leaves the sandbox's
	// filesystem (on the local backend: its workspace) is refused with
	// ErrPermission.
	Files = client.Files
	// WriteEntry is one file of WriteMany.
	WriteEntry = client.WriteEntry
	// WatchHandle stops a directory watch.
	WatchHandle = client.WatchHandle
)
