package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
)

const workspaceUsage = `usage: ds-sandbox workspace ls [--json]
       ds-sandbox workspace rm ID…

Lists or removes the daemon's workspaces (the directories sandboxes work in;
named ones outlive their sandboxes). A workspace a running sandbox uses is not
removed: kill the sandbox first.
`

func workspaceCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	op, rest, st, ok := subcommand("workspace", workspaceUsage, []string{"ls", "rm"}, args, stdout, stderr)
	if !ok {
		return st
	}
	c := newCommand("workspace "+op, workspaceUsage, stdout, stderr)
	asJSON := false
	if op == "ls" {
		c.BoolVar(&asJSON, "json", false, "print the workspaces as a JSON array")
	}
	if st, ok := c.parse(rest); !ok {
		return st
	}
	min, max := 0, 0
	if op == "rm" {
		min, max = 1, -1
	}
	if st, ok := c.wantArgs(min, max); !ok {
		return st
	}
	d, err := dialDaemon()
	if err != nil {
		return c.fail(err)
	}
	if op == "rm" {
		status := 0
		for _, id := range c.Args() {
			if err := d.RemoveWorkspace(ctx, id); err != nil {
				status = c.fail(d.explain(err))
				continue
			}
			fmt.Fprintln(stdout, id)
		}
		return status
	}
	list, err := d.ListWorkspaces(ctx)
	if err != nil {
		return c.fail(d.explain(err))
	}
	if asJSON {
		return printJSON(c, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tPATH")
	for _, w := range list {
		id := w.ID
		if w.Anonymous {
			id += " (anonymous)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", id, w.CreatedAt.Local().Format("2006-01-02 15:04"), w.Path)
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

const datasetUsage = `usage: ds-sandbox dataset add [--description TEXT] [--tag TAG]… [--server] NAME PATH
       ds-sandbox dataset ls [--json] [--name-contains S] [--tag TAG]… [--format F]
       ds-sandbox dataset rm NAME…

Manages the daemon's dataset registry; a sandbox gets a dataset into its data/
with prepare_dataset. add uploads the local file PATH (streamed) as NAME; with
--server, PATH is a file or directory on the daemon's host, registered where
it is (admin keys only). Removing a dataset leaves the copies already in
workspaces.
`

func datasetCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	op, rest, st, ok := subcommand("dataset", datasetUsage, []string{"add", "ls", "rm"}, args, stdout, stderr)
	if !ok {
		return st
	}
	c := newCommand("dataset "+op, datasetUsage, stdout, stderr)
	var tags []string
	var description, nameContains, format string
	var onServer, asJSON bool
	tagFlag := func(s string) error {
		if s = strings.TrimSpace(s); s == "" {
			return fmt.Errorf("empty tag")
		}
		tags = append(tags, s)
		return nil
	}
	min, max := 1, -1
	switch op {
	case "add":
		min, max = 2, 2
		c.StringVar(&description, "description", "", "what the dataset is")
		c.Func("tag", "a tag (repeatable)", tagFlag)
		c.BoolVar(&onServer, "server", false, "PATH is an absolute path on the daemon's host; register it there instead of uploading")
	case "ls":
		min, max = 0, 0
		c.BoolVar(&asJSON, "json", false, "print the datasets as a JSON array")
		c.StringVar(&nameContains, "name-contains", "", "only names containing this (ignoring case)")
		c.Func("tag", "only datasets with this tag (repeatable: all of them)", tagFlag)
		c.StringVar(&format, "format", "", "only this format: csv, tsv, parquet, json, excel, feather, text, dir or unknown")
	}
	if st, ok := c.parse(rest); !ok {
		return st
	}
	if st, ok := c.wantArgs(min, max); !ok {
		return st
	}
	d, err := dialDaemon()
	if err != nil {
		return c.fail(err)
	}
	switch op {
	case "add":
		name, p := c.Arg(0), c.Arg(1)
		var ds dssandbox.Dataset
		if onServer {
			if !filepath.IsAbs(p) {
				return c.usageError("--server: %q must be an absolute path on the daemon's host", p)
			}
			ds, err = d.RegisterServerDataset(ctx, p, name, description, tags)
		} else {
			if st, serr := os.Stat(p); serr == nil && st.IsDir() {
				return c.fail(fmt.Errorf("%s is a directory: only files are uploaded; register a directory on the daemon's host with --server", p))
			}
			ds, err = d.RegisterDataset(ctx, p, name, description, tags)
		}
		if err != nil {
			return c.fail(d.explain(err))
		}
		fmt.Fprintf(stdout, "dataset %s: %s, %d bytes, sha256 %s\n", ds.Name, ds.Format, ds.Size, ds.SHA256)
		return 0
	case "rm":
		status := 0
		for _, name := range c.Args() {
			if err := d.RemoveDataset(ctx, name); err != nil {
				status = c.fail(d.explain(err))
				continue
			}
			fmt.Fprintln(stdout, name)
		}
		return status
	}
	list, err := d.ListDatasets(ctx, dssandbox.DatasetFilter{NameContains: nameContains, Tags: tags, Format: format})
	if err != nil {
		return c.fail(d.explain(err))
	}
	if asJSON {
		return printJSON(c, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFORMAT\tSIZE\tTAGS\tREGISTERED\tDESCRIPTION")
	for _, ds := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ds.Name, ds.Format, size(ds.Size), orDash(strings.Join(ds.Tags, ",")),
			ds.RegisteredAt.Local().Format("2006-01-02 15:04"), ds.Description)
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

// subcommand splits `NAME OP …`: it answers -h (and no operation, an unknown
// one) itself with ok false.
func subcommand(name, usage string, ops []string, args []string, stdout, stderr io.Writer) (op string, rest []string, status int, ok bool) {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "ds-sandbox %s: missing operation\n\n%s", name, usage)
		return "", nil, exitUsage, false
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return "", nil, 0, false
	}
	for _, o := range ops {
		if args[0] == o {
			return o, args[1:], 0, true
		}
	}
	fmt.Fprintf(stderr, "ds-sandbox %s: unknown operation %q\n\n%s", name, args[0], usage)
	return "", nil, exitUsage, false
}

// size is a byte count for people: 512 B, 3.2 KiB, 41.0 MiB.
func size(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}
