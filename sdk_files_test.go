package dssandbox_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
)

func TestFiles(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{})
	ctx := t.Context()

	t.Run("binary round trip", func(t *testing.T) {
		data := make([]byte, 1<<20+17)
		rand.Read(data)
		if _, err := sbx.Files.Write(ctx, "bin/blob.dat", data); err != nil {
			t.Fatal(err)
		}
		got, err := sbx.Files.Read(ctx, "/home/user/bin/blob.dat")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip differs (err %v, %d vs %d bytes)", err, len(got), len(data))
		}
		// The code sees the same bytes.
		e := run(t, sbx, "import hashlib; hashlib.sha256(open('bin/blob.dat','rb').read()).hexdigest()")
		if e.Error != nil || len(e.Text()) != 66 {
			t.Fatalf("code could not read the file: %+v", e)
		}
	})
	t.Run("code writes, API reads", func(t *testing.T) {
		run(t, sbx, "import os\nopen(os.path.join(os.environ['WORKSPACE_OUTPUTS'], 'r.txt'), 'w').write('result')")
		got, err := sbx.Files.Read(ctx, "outputs/r.txt")
		if err != nil || string(got) != "result" {
			t.Fatalf("read = %q, %v", got, err)
		}
	})
	t.Run("list, info, exists, mkdir, rename, remove", func(t *testing.T) {
		if _, err := sbx.Files.MakeDir(ctx, "a/b/c"); err != nil {
			t.Fatal(err)
		}
		if _, err := sbx.Files.WriteMany(ctx, []dssandbox.WriteEntry{{Path: "a/one.txt", Data: []byte("1")}, {Path: "a/b/two.txt", Data: []byte("22")}}); err != nil {
			t.Fatal(err)
		}
		entries, err := sbx.Files.List(ctx, "a", 2)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, e := range entries {
			paths = append(paths, e.Path)
		}
		want := "/home/user/a/b /home/user/a/b/c /home/user/a/b/two.txt /home/user/a/one.txt"
		if strings.Join(paths, " ") != want {
			t.Fatalf("list depth 2 = %v, want %s", paths, want)
		}
		info, err := sbx.Files.GetInfo(ctx, "a/b/two.txt")
		if err != nil || info.Size != 2 || info.Type != "file" || info.Name != "two.txt" {
			t.Fatalf("info = %+v %v", info, err)
		}
		if _, err := sbx.Files.Rename(ctx, "a/one.txt", "a/uno.txt"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := sbx.Files.Exists(ctx, "a/one.txt"); ok {
			t.Fatal("renamed file still exists")
		}
		if err := sbx.Files.Remove(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if ok, err := sbx.Files.Exists(ctx, "a/uno.txt"); ok || err != nil {
			t.Fatalf("removed tree: exists=%v err=%v", ok, err)
		}
		// On local, / holds only the way to the workdir and to the
		// workspace's host path.
		root, err := sbx.Files.List(ctx, "/", 1)
		if err != nil || len(root) == 0 || root[0].Name != "home" || len(root) > 2 {
			t.Fatalf("list / = %+v %v", root, err)
		}
	})
	t.Run("escapes refused", func(t *testing.T) {
		info, _ := sbx.GetInfo(ctx)
		outside := t.TempDir()
		os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret"), 0o644)
		if err := os.Symlink(outside, filepath.Join(info.WorkspacePath, "link-out")); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"../../../etc/passwd", "/etc/passwd", "link-out/secret", "/home/user/../../etc/passwd"} {
			if _, err := sbx.Files.Read(ctx, p); !errors.Is(err, dssandbox.ErrPermission) && !errors.Is(err, dssandbox.ErrNotFound) {
				t.Errorf("read %s: %v, want refusal", p, err)
			} else if err == nil {
				t.Errorf("read %s succeeded", p)
			}
			if _, err := sbx.Files.Write(ctx, p, []byte("x")); err == nil {
				t.Errorf("write %s succeeded", p)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "host secret" {
			t.Fatal("a write went through the symlink")
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := sbx.Files.Read(ctx, "nope.txt"); !errors.Is(err, dssandbox.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("upload and download", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "local.csv")
		os.WriteFile(src, []byte("a,b\n1,2\n"), 0o644)
		if _, err := sbx.Files.Upload(ctx, src, "data/up.csv"); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, "deep", "down.csv")
		if err := sbx.Files.Download(ctx, "data/up.csv", dst); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(dst); string(b) != "a,b\n1,2\n" {
			t.Fatalf("downloaded %q", b)
		}
		if err := sbx.Files.Download(ctx, "data/missing.csv", filepath.Join(dir, "m.csv")); !errors.Is(err, dssandbox.ErrNotFound) {
			t.Fatalf("download of a missing file: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "m.csv")); !os.IsNotExist(err) {
			t.Fatal("failed download left a file")
		}
	})
	t.Run("watch", func(t *testing.T) {
		if _, err := sbx.Files.MakeDir(ctx, "watched"); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var names []string
		h, err := sbx.Files.WatchDir(ctx, "watched", false, func(ev dssandbox.FilesystemEvent) {
			mu.Lock()
			names = append(names, ev.Op+":"+ev.Name)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		run(t, sbx, "open('watched/new.txt', 'w').write('x')")
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := strings.Join(names, " ")
			mu.Unlock()
			if strings.Contains(got, "create:new.txt") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no create event; got %q", got)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := h.Stop(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		n := len(names)
		mu.Unlock()
		run(t, sbx, "open('watched/after.txt', 'w').write('x')")
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if len(names) != n {
			t.Fatalf("events after Stop: %q", names[n:])
		}
	})
}

func TestCommands(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{Envs: map[string]string{"SBX_VAR": "sbx"}})
	ctx := t.Context()

	res, err := sbx.Commands.Run(ctx, "echo out; echo err >&2; exit 3")
	if err != nil || res.ExitCode != 3 || res.Stdout != "out\n" || res.Stderr != "err\n" {
		t.Fatalf("run = %+v, %v", res, err)
	}
	sbx.Files.MakeDir(ctx, "sub")
	res, err = sbx.Commands.Run(ctx, "echo $SBX_VAR $CMD_VAR; basename $(pwd)",
		dssandbox.WithCommandEnvs(map[string]string{"CMD_VAR": "cmd"}), dssandbox.WithCwd("sub"))
	if err != nil || res.Stdout != "sbx cmd\nsub\n" {
		t.Fatalf("envs/cwd = %q, %v", res.Stdout, err)
	}
	res, err = sbx.Commands.Run(ctx, "sleep 30", dssandbox.WithCommandTimeout(300*time.Millisecond))
	if err != nil || res.ExitCode == 0 || !strings.Contains(res.Error, "timed out") {
		t.Fatalf("timeout = %+v, %v", res, err)
	}
	var chunks []string
	res, err = sbx.Commands.Run(ctx, "for i in 1 2 3; do echo $i; done", dssandbox.OnCommandStdout(func(s string) { chunks = append(chunks, s) }))
	if err != nil || strings.Join(chunks, "") != "1\n2\n3\n" {
		t.Fatalf("streamed %q, %v", chunks, err)
	}

	h, err := sbx.Commands.Start(ctx, "cat", dssandbox.WithStdin(), dssandbox.WithTag("echo"))
	if err != nil {
		t.Fatal(err)
	}
	procs, err := sbx.Commands.List(ctx)
	if err != nil || len(procs) != 1 || procs[0].PID != h.PID || procs[0].Tag != "echo" {
		t.Fatalf("list = %+v %v", procs, err)
	}
	done := make(chan dssandbox.CommandResult, 1)
	go func() {
		r, _ := h.Wait(ctx)
		done <- r
	}()
	time.Sleep(100 * time.Millisecond) // let Wait attach before the output comes
	if err := h.SendStdin(ctx, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if err := h.CloseStdin(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.ExitCode != 0 || r.Stdout != "ping\n" {
		t.Fatalf("cat = %+v", r)
	}

	h, err = sbx.Commands.Start(ctx, "sleep 1000")
	if err != nil {
		t.Fatal(err)
	}
	if err := sbx.Commands.Kill(ctx, h.PID); err != nil {
		t.Fatal(err)
	}
	if r, err := h.Wait(ctx); err != nil || r.ExitCode == 0 {
		t.Fatalf("killed process: %+v %v", r, err)
	}
	if err := sbx.Commands.Kill(ctx, 999999); !errors.Is(err, dssandbox.ErrNotFound) {
		t.Fatalf("kill unknown pid: %v", err)
	}
	if _, err := sbx.Commands.Run(ctx, ""); !errors.Is(err, dssandbox.ErrInvalid) {
		t.Fatalf("empty command: %v", err)
	}
}

func TestDatasets(t *testing.T) {
	t.Parallel()
	src := filepath.Join(t.TempDir(), "sales.csv")
	os.WriteFile(src, []byte("region,amount\nnorth,10\nsouth,32\n"), 0o644)
	name := "sales-" + strings.ToLower(rand.Text()[:6])
	ds, err := dssandbox.RegisterDataset(t.Context(), src, name, "quarterly sales", []string{"finance"})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Format != "csv" || len(ds.SHA256) != 64 || ds.Size != 32 {
		t.Fatalf("dataset = %+v", ds)
	}
	if _, err := dssandbox.RegisterDataset(t.Context(), src, name, "", nil); !errors.Is(err, dssandbox.ErrExists) {
		t.Fatalf("second register: %v", err)
	}
	list, err := dssandbox.ListDatasets(t.Context(), dssandbox.DatasetFilter{NameContains: name, Tags: []string{"finance"}})
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %+v %v", list, err)
	}
	sbx := newSandbox(t, dssandbox.Options{})
	p, err := sbx.PrepareDataset(t.Context(), name, "copy")
	if err != nil || p != "data/sales.csv" {
		t.Fatalf("prepared at %q, %v", p, err)
	}
	e := run(t, sbx, "import pandas as pd; int(pd.read_csv('"+p+"')['amount'].sum())")
	if e.Text() != "42" {
		t.Fatalf("code read %q %+v", e.Text(), e.Error)
	}
	// On local, code runs as the daemon's user: a hard link into the
	// registry would let it rewrite the dataset for everyone.
	if _, err := sbx.PrepareDataset(t.Context(), name, "link"); !errors.Is(err, dssandbox.ErrUnsupported) {
		t.Fatalf("link on local: %v", err)
	}
	if _, err := sbx.PrepareDataset(t.Context(), "no-such-dataset", ""); !errors.Is(err, dssandbox.ErrNotFound) {
		t.Fatalf("prepare unknown: %v", err)
	}
	if err := dssandbox.RemoveDataset(t.Context(), name); err != nil {
		t.Fatal(err)
	}
}
