package mcpserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	// maxFileSize bounds read_file and write_file.
	maxFileSize = 10 << 20
	// maxListEntries bounds list_files.
	maxListEntries = 1000
	// maxListDepth is the agent's bound on a listing's depth.
	maxListDepth = 32
)

func (s *Server) readFile(ctx context.Context, sess *session, in readFileIn) (*mcp.CallToolResult, any, error) {
	if in.Path == "" {
		return nil, nil, api.Errorf(api.ErrInvalid, "path is empty: pass the file to read in \"path\"")
	}
	sb, notice, err := s.sandbox(ctx, sess, in.SandboxID)
	if err != nil {
		return nil, nil, err
	}
	st, err := sb.Agent().Stat(ctx, in.Path)
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return nil, nil, api.Errorf(api.ErrInvalid, "%s is a directory: use list_files", st.Path)
	}
	if st.Size > maxFileSize {
		return nil, nil, tooBig(st.Path, st.Size)
	}
	rc, err := sb.Agent().ReadFile(ctx, in.Path)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", st.Path, err)
	}
	if len(data) > maxFileSize { // it grew since the stat
		return nil, nil, tooBig(st.Path, int64(len(data)))
	}
	return &mcp.CallToolResult{Content: withNotice(notice, fileContent(st.Path, data))}, nil, nil
}

func tooBig(path string, size int64) error {
	return api.Errorf(api.ErrLimit, "%s is %.1f MiB; read_file returns at most %d MiB: read a part with run_command (head -c, tail, split) or process it with run_code",
		path, float64(size)/(1<<20), maxFileSize>>20)
}

// fileContent shows a file: UTF-8 text as text, an image as image content,
// anything else as base64 after a line saying so.
func fileContent(path string, data []byte) []mcp.Content {
	if utf8.Valid(data) && !bytes.ContainsRune(data, 0) {
		return []mcp.Content{text("%s", data)}
	}
	mime, _, _ := strings.Cut(http.DetectContentType(data), ";")
	switch mime {
	case "image/png", "image/jpeg", "image/gif", "image/webp":
		return []mcp.Content{
			text("%s: %s image, %d bytes", path, mime, len(data)),
			&mcp.ImageContent{Data: data, MIMEType: mime},
		}
	}
	return []mcp.Content{text("%s is a binary file (%s, %d bytes); its content, base64-encoded:\n%s",
		path, mime, len(data), base64.StdEncoding.EncodeToString(data))}
}

func (s *Server) writeFile(ctx context.Context, sess *session, in writeFileIn) (*mcp.CallToolResult, writeFileOut, error) {
	if in.Path == "" {
		return nil, writeFileOut{}, api.Errorf(api.ErrInvalid, "path is empty: pass the file to write in \"path\"")
	}
	data := []byte(in.Content)
	switch in.Encoding {
	case "", "utf-8":
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return nil, writeFileOut{}, api.Errorf(api.ErrInvalid, "content is not valid base64 (%v); send text with encoding omitted", err)
		}
	default:
		return nil, writeFileOut{}, api.Errorf(api.ErrInvalid, "encoding %q: want utf-8 or base64", in.Encoding)
	}
	if len(data) > maxFileSize {
		return nil, writeFileOut{}, api.Errorf(api.ErrLimit, "content is %.1f MiB; write_file takes at most %d MiB", float64(len(data))/(1<<20), maxFileSize>>20)
	}
	sb, notice, err := s.sandbox(ctx, sess, in.SandboxID)
	if err != nil {
		return nil, writeFileOut{}, err
	}
	e, err := sb.Agent().WriteFile(ctx, in.Path, bytes.NewReader(data))
	if err != nil {
		return nil, writeFileOut{}, err
	}
	out := writeFileOut{SandboxID: sb.ID(), Path: e.Path, Size: e.Size}
	content := withNotice(notice, []mcp.Content{text("Wrote %d bytes to %s.", out.Size, out.Path)})
	return &mcp.CallToolResult{Content: content}, out, nil
}

func (s *Server) listFiles(ctx context.Context, sess *session, in listFilesIn) (*mcp.CallToolResult, listFilesOut, error) {
	if in.Depth < 0 || in.Depth > maxListDepth {
		return nil, listFilesOut{}, api.Errorf(api.ErrInvalid, "depth %d must be between 1 and %d (or omitted for 1)", in.Depth, maxListDepth)
	}
	sb, notice, err := s.sandbox(ctx, sess, in.SandboxID)
	if err != nil {
		return nil, listFilesOut{}, err
	}
	entries, err := sb.Agent().List(ctx, in.Path, in.Depth)
	if err != nil {
		return nil, listFilesOut{}, err
	}
	out := listFilesOut{SandboxID: sb.ID(), Entries: make([]entry, 0, min(len(entries), maxListEntries))}
	var b strings.Builder
	for i, e := range entries {
		if i == maxListEntries {
			out.Omitted = len(entries) - i
			fmt.Fprintf(&b, "[%d more entries not shown: list a subdirectory or use a smaller depth]\n", out.Omitted)
			break
		}
		out.Entries = append(out.Entries, entry{Path: e.Path, Type: e.Type, Size: e.Size})
		switch e.Type {
		case api.FileTypeDir:
			fmt.Fprintf(&b, "dir      %10s  %s/\n", "-", e.Path)
		case api.FileTypeSymlink:
			fmt.Fprintf(&b, "symlink  %10s  %s -> %s\n", "-", e.Path, e.SymlinkTarget)
		default:
			fmt.Fprintf(&b, "%-7s  %10d  %s\n", e.Type, e.Size, e.Path)
		}
	}
	if len(entries) == 0 {
		b.WriteString("(empty directory)\n")
	}
	return &mcp.CallToolResult{Content: withNotice(notice, []mcp.Content{text("%s", b.String())})}, out, nil
}
