package eventstream

import (
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Execution streams (the agent's and the REST API's) share these bounds.
const (
	// ExecMaxQueued is the most bytes of an execution's events that wait
	// for a slow client before output and results are dropped.
	ExecMaxQueued = 64 << 20
	// ExecWriteTimeout is how long a client may stop reading an execution's
	// stream before it is cut and the cell interrupted (docs/SECURITY.md).
	ExecWriteTimeout = 30 * time.Second
)

// ExecOptions returns the Options of an execution's event stream: stdout,
// stderr and results may be dropped for a slow client (the caller says how
// many with a notice); notices, errors and the final events never are.
func ExecOptions(onBroken func(error)) Options[api.ExecEvent] {
	return Options[api.ExecEvent]{
		MaxQueued: ExecMaxQueued, WriteTimeout: ExecWriteTimeout, Size: ExecEventSize,
		Droppable: func(ev api.ExecEvent) bool {
			return ev.Type == api.EventStdout || ev.Type == api.EventStderr || ev.Type == api.EventResult
		},
		OnBroken: onBroken,
	}
}

// ExecEventSize estimates the encoded size of ev.
func ExecEventSize(ev api.ExecEvent) int {
	n := len(ev.Text) + 64
	if r := ev.Result; r != nil {
		n += len(r.Text) + len(r.HTML) + len(r.Markdown) + len(r.SVG) + len(r.PNG) + len(r.JPEG) + len(r.PDF) + len(r.LaTeX) + len(r.JSON) + len(r.JavaScript)
		for _, v := range r.Other {
			n += len(v)
		}
	}
	if e := ev.Error; e != nil {
		n += len(e.Name) + len(e.Value) + len(e.Traceback)
	}
	return n
}
