package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/imagebuild"
	"github.com/ds-sandbox/ds-sandbox/internal/template"
)

const templateUsage = `Usage:
  ds-sandbox template build [--config FILE] FILE.yaml   build the template's image (docker) and save the template
  ds-sandbox template ls [--config FILE]                list built template images
  ds-sandbox template rm [--config FILE] ID             remove a template's image and its saved template
  ds-sandbox template export ID|IMAGE DIR               write an image's root filesystem into DIR (for oci)
`

// templateCmd is `ds-sandbox template build|ls|rm|export`.
func templateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	op, rest, st, ok := subcommand("template", templateUsage, []string{"build", "ls", "rm", "export"}, args, stdout, stderr)
	if !ok {
		return st
	}
	fl := newCommand("template "+op, templateUsage, stdout, stderr)
	cfgFile := fl.String("config", "", "config file (YAML or JSON)")
	if st, ok := fl.parse(rest); !ok {
		return st
	}
	n := map[string]int{"build": 1, "ls": 0, "rm": 1, "export": 2}[op]
	if st, ok := fl.wantArgs(n, n); !ok {
		return st
	}
	if err := templateRun(ctx, op, *cfgFile, fl.Args(), stdout); err != nil {
		return fl.fail(err)
	}
	return 0
}

func templateRun(ctx context.Context, op, cfgFile string, args []string, stdout io.Writer) error {
	cfg, err := config.Load(cfgFile)
	if err != nil {
		return err
	}
	var t api.Template
	if op == "build" {
		data, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		if t, err = template.Parse(data, args[0]); err != nil {
			return err
		}
	}
	b, err := imagebuild.New(ctx, "")
	if err != nil {
		return err
	}
	defer b.Close()
	saved := filepath.Join(cfg.StateDir, "templates")
	switch op {
	case "build":
		fmt.Fprintf(stdout, "building template %s from %s\n", t.ID, baseOf(t))
		tag, err := b.Build(ctx, t, stdout)
		if err != nil {
			return err
		}
		t.Image = tag
		// The run commands are in the image now; the saved template names it.
		t.RunCmds = nil
		if err := template.Save(saved, t); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "template %s: image %s, saved in %s; use it with --backend docker --template %s\n", t.ID, tag, saved, t.ID)
	case "ls":
		list, err := b.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TEMPLATE\tIMAGE\tSIZE\tCREATED")
		for _, im := range list {
			fmt.Fprintf(tw, "%s\t%s\t%dMB\t%s\n", im.Template, im.Tag, im.Size>>20, im.Created.Format("2006-01-02 15:04"))
		}
		return tw.Flush()
	case "rm":
		id := args[0]
		if err := template.ValidateID(id); err != nil {
			return err
		}
		err := b.Remove(ctx, id)
		if t, lerr := template.Load([]string{saved}, id); lerr == nil && t.Image == imagebuild.Tag(id) {
			if rerr := os.Remove(filepath.Join(saved, id+".yaml")); rerr == nil && errors.Is(err, api.ErrNotFound) {
				err = nil
			}
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed template %s\n", id)
	case "export":
		ref := args[0]
		if template.ValidateID(ref) == nil {
			if t, err := template.Load(cfg.TemplateDirs(), ref); err == nil && t.Image != "" {
				ref = t.Image
			}
		}
		if err := b.Export(ctx, ref, args[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "exported %s into %s\n", ref, args[1])
	}
	return nil
}

func baseOf(t api.Template) string {
	if t.Image != "" {
		return t.Image
	}
	return imagebuild.DefaultBase
}
