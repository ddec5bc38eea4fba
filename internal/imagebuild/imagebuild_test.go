package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

func TestUntarStaysInside(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	outside := t.TempDir()
	entries := []tar.Header{
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/hello", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 2},
		{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2},
		{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside},
		{Name: "out/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2},
	}
	for _, h := range entries {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("hi"))
		}
	}
	tw.Close()
	dir := t.TempDir()
	err := untar(&buf, dir)
	if err == nil {
		t.Error("untar followed a symlink out of the directory without complaint")
	}
	if st, err := os.Stat(filepath.Join(dir, "etc/hello")); err != nil || st.Mode()&os.ModeSetuid == 0 {
		t.Errorf("etc/hello: %v %v, want a setuid file", st, err)
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
		t.Error("a file was written outside the directory")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
		t.Error("../escape was written")
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	df := Dockerfile(api.Template{ID: "x", RunCmds: []string{"apt-get install -y \"jq\""}})
	for _, want := range []string{"FROM " + DefaultBase + "\n", `RUN ["/bin/sh", "-c", "apt-get install -y \"jq\""]`, "RUN " + kernelCheck, `LABEL ds-sandbox.template="x"`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q:\n%s", want, df)
		}
	}
}

// TestBuildListExportRemove needs a Docker daemon and the base image
// (scripts/docker-setup.sh).
func TestBuildListExportRemove(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	b, err := New(ctx, "")
	testenv.RequireNoError(t, "a Docker daemon (run scripts/docker-setup.sh)", err)
	defer b.Close()
	_, err = b.c.ImageInspect(ctx, DefaultBase)
	testenv.RequireNoError(t, "the image "+DefaultBase+" (run scripts/docker-setup.sh)", err)
	id := "imagebuild-test"
	var out bytes.Buffer
	tag, err := b.Build(ctx, api.Template{ID: id, RunCmds: []string{"echo marker > /etc/imagebuild-marker"}}, &out)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, out.String())
	}
	defer b.Remove(context.Background(), id)
	if !strings.Contains(out.String(), "Step") {
		t.Errorf("no progress shown: %q", out.String())
	}
	list, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, im := range list {
		found = found || (im.Template == id && im.Tag == tag)
	}
	if !found {
		t.Errorf("List = %+v, want %s", list, tag)
	}
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := b.Export(ctx, tag, dir); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "etc/imagebuild-marker")); err != nil || string(got) != "marker\n" {
		t.Errorf("exported marker: %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "usr/bin/python3")); err != nil {
		t.Errorf("exported rootfs has no python3: %v", err)
	}

	_, err = b.Build(ctx, api.Template{ID: id + "-nokernel", RunCmds: []string{"rm -rf /usr/lib/python3/dist-packages/ipykernel*"}}, nil)
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "ipykernel") {
		t.Errorf("build without ipykernel: %v, want ErrInvalid naming ipykernel", err)
	}
	if err := b.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, id); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
}
