package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

const psUsage = `usage: ds-sandbox ps [-q] [--json]

Lists the daemon's running sandboxes (those the API key may see), oldest first.
`

func psCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := newCommand("ps", psUsage, stdout, stderr)
	quiet := c.Bool("q", false, "print only the sandbox ids")
	asJSON := c.Bool("json", false, "print the sandboxes as a JSON array")
	if st, ok := c.parse(args); !ok {
		return st
	}
	if st, ok := c.wantArgs(0, 0); !ok {
		return st
	}
	d, err := dialDaemon()
	if err != nil {
		return c.fail(err)
	}
	list, err := d.List(ctx, nil)
	if err != nil {
		return c.fail(d.explain(err))
	}
	slices.SortFunc(list, func(a, b api.SandboxInfo) int { return a.StartedAt.Compare(b.StartedAt) })
	switch {
	case *asJSON:
		return printJSON(c, list)
	case *quiet:
		for _, s := range list {
			fmt.Fprintln(stdout, s.SandboxID)
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tBACKEND\tTEMPLATE\tAGE\tWORKSPACE")
	now := time.Now()
	for _, s := range list {
		ws := s.WorkspaceID
		if s.Anonymous {
			ws = "(anonymous)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.SandboxID, s.State, s.Backend, orDash(s.TemplateID), age(now.Sub(s.StartedAt)), ws)
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is a short duration: 42s, 5m, 3h12m, 2d4h.
func age(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func printJSON(c *command, v any) int {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return c.fail(err)
	}
	return 0
}

const killUsage = `usage: ds-sandbox kill ID…

Kills sandboxes: their processes end and anonymous workspaces are removed
(named workspaces are kept). Prints each id killed; exit status 1 when any
could not be.
`

func killCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := newCommand("kill", killUsage, stdout, stderr)
	if st, ok := c.parse(args); !ok {
		return st
	}
	if st, ok := c.wantArgs(1, -1); !ok {
		return st
	}
	d, err := dialDaemon()
	if err != nil {
		return c.fail(err)
	}
	status := 0
	for _, id := range c.Args() {
		if err := d.Kill(ctx, id); err != nil {
			status = c.fail(d.explain(err))
			continue
		}
		fmt.Fprintln(stdout, id)
	}
	return status
}

const logsUsage = `usage: ds-sandbox logs [-f] [-n N] [--json] ID

Prints a sandbox's events (created, network denials, blocked cells, timeout
changes, killed, …), oldest first. The daemon keeps them in a bounded history,
also after the sandbox ended. With -f it keeps printing new ones until the
sandbox ends (it asks the daemon once a second).
`

// endEvents end a sandbox: -f stops after one.
var endEvents = []string{api.EventSandboxKilled, api.EventSandboxExpired, api.EventSandboxExited, api.EventSandboxReaped}

// followInterval is how often logs -f asks for new events; followGoneGrace
// how many polls it waits for the end event of a sandbox that is gone.
const (
	followInterval  = time.Second
	followGoneGrace = 60
)

func logsCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := newCommand("logs", logsUsage, stdout, stderr)
	follow := c.Bool("f", false, "follow: print new events until the sandbox ends")
	limit := c.Int("n", 100, "print at most the N most recent events first (1..10000)")
	asJSON := c.Bool("json", false, "print one JSON event per line")
	if st, ok := c.parse(args); !ok {
		return st
	}
	if st, ok := c.wantArgs(1, 1); !ok {
		return st
	}
	if *limit < 1 || *limit > 10000 {
		return c.usageError("-n %d: want 1..10000", *limit)
	}
	id := c.Arg(0)
	d, err := dialDaemon()
	if err != nil {
		return c.fail(err)
	}
	show := func(ev api.Event) {
		if *asJSON {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(stdout, "%s\n", b)
			return
		}
		var data []string
		for _, k := range slices.Sorted(maps.Keys(ev.Data)) {
			data = append(data, fmt.Sprintf("%s=%q", k, ev.Data[k]))
		}
		fmt.Fprintf(stdout, "%s  %s  %s\n", ev.Time.Local().Format(time.RFC3339), ev.Type, strings.Join(data, " "))
	}
	evs, err := d.Events(ctx, id, *limit)
	if err == nil && len(evs) == 0 {
		// The route answers an unknown id with no events; say which it is.
		_, err = d.Info(ctx, id)
	}
	if err != nil {
		return c.fail(d.explain(err))
	}
	var last api.Event
	for _, ev := range evs {
		show(ev)
		last = ev
	}
	if !*follow || slices.Contains(endEvents, last.Type) {
		return 0
	}
	goneFor := 0
	t := time.NewTicker(followInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 130
		case <-t.C:
		}
		evs, err := d.Events(ctx, id, 10000)
		if err != nil {
			if ctx.Err() != nil {
				return 130
			}
			return c.fail(d.explain(err))
		}
		fresh := newEvents(evs, last)
		for _, ev := range fresh {
			show(ev)
			last = ev
		}
		if slices.Contains(endEvents, last.Type) {
			return 0
		}
		if len(fresh) > 0 {
			goneFor = 0
			continue
		}
		// A sandbox being killed is gone from the list before its end event
		// comes (stopping it takes a while); one whose end event never comes
		// (a restarted daemon, an overflowing history) is given up on.
		if _, err := d.Info(ctx, id); errors.Is(err, api.ErrNotFound) {
			if goneFor++; goneFor >= followGoneGrace {
				fmt.Fprintf(stderr, "ds-sandbox logs: sandbox %s is gone (no end event came)\n", id)
				return 0
			}
		}
	}
}

// newEvents returns the events of evs (oldest first) after last: those after
// it in evs, or when it fell out of the history, those later than it.
func newEvents(evs []api.Event, last api.Event) []api.Event {
	if last.ID == "" {
		return evs
	}
	for i, ev := range evs {
		if ev.ID == last.ID {
			return evs[i+1:]
		}
	}
	i := 0
	for i < len(evs) && !evs[i].Time.After(last.Time) {
		i++
	}
	return evs[i:]
}
