// Package imagebuild turns templates into Docker images through the Engine
// API: `ds-sandbox template build|ls|rm|export`. A template's image is its
// base (default: the ds-sandbox base image built from Debian packages by
// scripts/docker-setup.sh), its run_cmds run as root, one layer each, and a
// check that python3 can import ipykernel, so an image that cannot run
// kernels fails here with a clear message rather than at sandbox create.
// Files, env, start and ready commands are applied per sandbox by the
// manager, not baked in.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// DefaultBase is the base image of templates that name none (the docker
// backend's default image).
const DefaultBase = "ds-sandbox/base:bookworm"

// LabelTemplate carries the template id on images built from templates.
const LabelTemplate = "ds-sandbox.template"

// kernelCheck is the build's last step: the image must run ipykernel.
const kernelCheck = `python3 -c "import ipykernel"`

// Tag is the image reference of template id.
func Tag(id string) string { return "ds-sandbox-template/" + id + ":latest" }

// Builder builds, lists, removes and exports template images.
type Builder struct {
	c *client.Client
}

// New connects to the Docker Engine at host ("" = DOCKER_HOST or the default
// socket), negotiating the API version.
func New(ctx context.Context, host string) (*Builder, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, err
	}
	if _, err := c.Ping(ctx); err != nil {
		return nil, fmt.Errorf("no Docker daemon answers (%v); install docker.io and start dockerd (scripts/docker-setup.sh does both)", err)
	}
	return &Builder{c: c}, nil
}

// Close releases the client.
func (b *Builder) Close() error { return b.c.Close() }

// Dockerfile is the build recipe of t.
func Dockerfile(t api.Template) string {
	base := t.Image
	if base == "" {
		base = DefaultBase
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "FROM %s\nUSER root\n", base)
	for _, c := range t.RunCmds {
		// JSON form: the command goes to sh -c unchanged, newlines included.
		fmt.Fprintf(&sb, "RUN [\"/bin/sh\", \"-c\", %s]\n", strconv.Quote(c))
	}
	sb.WriteString("RUN " + kernelCheck + "\n")
	fmt.Fprintf(&sb, "LABEL %s=%s\n", LabelTemplate, strconv.Quote(t.ID))
	return sb.String()
}

// Build builds t's image, tagged Tag(t.ID), writing the build's progress to
// progress, and returns the tag.
func (b *Builder) Build(ctx context.Context, t api.Template, progress io.Writer) (string, error) {
	df := Dockerfile(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(df)), ModTime: time.Now()}); err != nil {
		return "", err
	}
	if _, err := io.WriteString(tw, df); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	tag := Tag(t.ID)
	resp, err := b.c.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true, Dockerfile: "Dockerfile",
	})
	if err != nil {
		return "", fmt.Errorf("build template %s: %w", t.ID, err)
	}
	defer resp.Body.Close()
	if progress == nil {
		progress = io.Discard
	}
	if err := showProgress(resp.Body, progress); err != nil {
		if strings.Contains(err.Error(), kernelCheck) {
			return "", api.Errorf(api.ErrInvalid, "template %s: the image cannot run Python kernels: python3 cannot import ipykernel; "+
				"add `apt-get update && apt-get install -y python3-ipykernel` (or `pip install ipykernel`) to run_cmds, or start from an image that has it", t.ID)
		}
		return "", api.Errorf(api.ErrInvalid, "build template %s: %v", t.ID, err)
	}
	return tag, nil
}

// showProgress copies the build's output (a stream of JSON messages) to w as
// text and returns the build's error, if any.
func showProgress(r io.Reader, w io.Writer) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Stream, Status, ID, Progress string
			Error                        string
			ErrorDetail                  struct{ Message string }
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read build output: %w", err)
		}
		switch {
		case m.Error != "" || m.ErrorDetail.Message != "":
			if m.ErrorDetail.Message != "" {
				return errors.New(m.ErrorDetail.Message)
			}
			return errors.New(m.Error)
		case m.Stream != "":
			io.WriteString(w, m.Stream)
		case m.Status != "" && m.Progress == "":
			fmt.Fprintln(w, strings.TrimSpace(m.ID+" "+m.Status))
		}
	}
}

// Image is one built template image.
type Image struct {
	Template string
	Tag      string
	ID       string
	Size     int64
	Created  time.Time
}

// List returns the template images on the daemon, sorted by template id.
func (b *Builder) List(ctx context.Context) ([]Image, error) {
	list, err := b.c.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelTemplate))})
	if err != nil {
		return nil, err
	}
	out := make([]Image, 0, len(list))
	for _, im := range list {
		tag := ""
		if len(im.RepoTags) > 0 {
			tag = im.RepoTags[0]
		}
		out = append(out, Image{Template: im.Labels[LabelTemplate], Tag: tag, ID: im.ID, Size: im.Size, Created: time.Unix(im.Created, 0)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Template < out[j].Template })
	return out, nil
}

// Remove removes template id's image. Errors: api.ErrNotFound when there is
// none.
func (b *Builder) Remove(ctx context.Context, id string) error {
	_, err := b.c.ImageRemove(ctx, Tag(id), image.RemoveOptions{PruneChildren: true})
	if cerrdefs.IsNotFound(err) {
		return api.Errorf(api.ErrNotFound, "template %s has no image (%s)", id, Tag(id))
	}
	return err
}

// Export writes the root filesystem of ref (a template id's image, or any
// image reference) into dir, which must be empty or missing: the rootfs the
// oci backend runs. Entries that would leave dir are refused (os.Root);
// device nodes are skipped.
func (b *Builder) Export(ctx context.Context, ref, dir string) error {
	ct, err := b.c.ContainerCreate(ctx, &container.Config{Image: ref, Entrypoint: []string{"/nonexistent"}}, nil, nil, nil, "")
	if err != nil {
		return fmt.Errorf("export %s: %w", ref, err)
	}
	defer b.c.ContainerRemove(context.Background(), ct.ID, container.RemoveOptions{Force: true})
	rc, err := b.c.ContainerExport(ctx, ct.ID)
	if err != nil {
		return fmt.Errorf("export %s: %w", ref, err)
	}
	defer rc.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
		return api.Errorf(api.ErrInvalid, "export %s: %s must be an empty directory", ref, dir)
	}
	return untar(rc, dir)
}

// untar extracts a tar stream into dir, never outside it.
func untar(r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	type dirMode struct {
		name string
		mode fs.FileMode
	}
	var dirs []dirMode // chmod after the files are in (a 0555 dir)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read export: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "/"))
		if name == "." || name == ".." || strings.HasPrefix(name, "../") {
			continue
		}
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
		}
		mode := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("extract %s: %w", name, err)
			}
			dirs = append(dirs, dirMode{name, mode})
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			// Owner first: a chown clears setuid and setgid bits.
			_ = root.Lchown(name, h.Uid, h.Gid)
			if err == nil {
				err = root.Chmod(name, mode)
			}
			if err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
			continue
		case tar.TypeSymlink:
			_ = root.Remove(name)
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
		case tar.TypeLink:
			_ = root.Remove(name)
			if err := root.Link(path.Clean(strings.TrimPrefix(h.Linkname, "/")), name); err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
		default:
			continue // devices, fifos: the runtime provides /dev
		}
		_ = root.Lchown(name, h.Uid, h.Gid)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = root.Chmod(dirs[i].name, dirs[i].mode)
	}
	return nil
}
