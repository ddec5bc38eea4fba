package jupyter

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// ExecuteRequest is one cell to run.
type ExecuteRequest struct {
	// Code is the source of the cell.
	Code string
	// Silent asks the kernel not to broadcast the code or its result and
	// not to increment the execution count.
	Silent bool
	// StoreHistory records the cell in the kernel's history.
	StoreHistory bool
	// AllowStdin lets the cell call input() and getpass(), answered by
	// Input. If AllowStdin is false or Input is nil, the kernel itself raises
	// StdinNotImplementedError in the cell (an error output, not a hang).
	AllowStdin bool
	// Input answers input()/getpass(): it gets the prompt and whether the
	// kernel asks for a password. If it returns an error the kernel receives
	// an empty string. Input runs on Execute's goroutine and Execute does not
	// watch its context meanwhile, so Input should honour the same context.
	Input func(prompt string, password bool) (string, error)
}

// Output is one iopub message that belongs to the cell.
type Output struct {
	// Type is "stream", "display_data", "update_display_data",
	// "execute_result", "error" or "clear_output".
	Type string
	// Name is the stream: "stdout" or "stderr".
	Name string
	// Text is the stream text.
	Text string
	// Data is the MIME bundle of display_data, update_display_data and
	// execute_result, e.g. "text/plain" → a JSON string.
	Data map[string]json.RawMessage
	// Metadata is the metadata of Data.
	Metadata map[string]json.RawMessage
	// DisplayID is transient.display_id, set by display(..., display_id=…).
	DisplayID string
	// ExecutionCount is the prompt number of execute_result.
	ExecutionCount int
	// EName and EValue are the exception class and message of an error.
	EName, EValue string
	// Traceback is the (ANSI-coloured) traceback of an error.
	Traceback []string
	// Wait is clear_output's wait flag.
	Wait bool
}

// Reply is the execute_reply of a cell.
type Reply struct {
	// Status is "ok", "error" or "aborted".
	Status string
	// ExecutionCount is the cell's prompt number.
	ExecutionCount int
	// EName, EValue and Traceback describe the exception when Status is
	// "error".
	EName, EValue string
	Traceback     []string
}

// executeContent is the content of execute_request.
type executeContent struct {
	Code            string          `json:"code"`
	Silent          bool            `json:"silent"`
	StoreHistory    bool            `json:"store_history"`
	UserExpressions json.RawMessage `json:"user_expressions"`
	AllowStdin      bool            `json:"allow_stdin"`
	StopOnError     bool            `json:"stop_on_error"`
}

// content is the union of the fields we read from iopub, shell and stdin
// message contents.
type content struct {
	Name      string                     `json:"name"`
	Text      string                     `json:"text"`
	Data      map[string]json.RawMessage `json:"data"`
	Metadata  map[string]json.RawMessage `json:"metadata"`
	Transient struct {
		DisplayID string `json:"display_id"`
	} `json:"transient"`
	ExecutionCount int      `json:"execution_count"`
	EName          string   `json:"ename"`
	EValue         string   `json:"evalue"`
	Traceback      []string `json:"traceback"`
	Wait           bool     `json:"wait"`
	ExecutionState string   `json:"execution_state"`
	Status         string   `json:"status"`
	Prompt         string   `json:"prompt"`
	Password       bool     `json:"password"`
}

// Execute runs one cell. It calls onOutput (which may be nil) for each output
// of the cell, in arrival order, on the calling goroutine, and returns when
// both the execute_reply and the iopub status idle of the request have
// arrived. A failing cell is not an error: see Reply.Status.
//
// Executes on one Kernel are serialized; a second caller waits, honouring its
// ctx. If ctx ends while the cell runs, Execute interrupts the kernel, keeps
// delivering outputs and waits up to Config.InterruptGrace for the cell to
// finish; it then returns the reply (possibly nil) and an error matching both
// ErrInterrupted and ctx.Err(). If the cell does not finish within the grace,
// the kernel is closed and the error also matches ErrDead. If the kernel dies
// during the cell, Execute returns promptly with an error matching ErrDead,
// after delivering the outputs received so far.
func (k *Kernel) Execute(ctx context.Context, req ExecuteRequest, onOutput func(Output)) (*Reply, error) {
	select {
	case k.execSem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("jupyter: execute: waiting for the running cell: %w", ctx.Err())
	case <-k.done:
		return nil, k.deadError("execute")
	}
	defer func() { <-k.execSem }()
	select {
	case <-k.done:
		return nil, k.deadError("execute")
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("jupyter: execute: %w", err)
	}

	in := newInbox()
	id, err := k.send(k.shell, "execute_request", executeContent{
		Code:            req.Code,
		Silent:          req.Silent,
		StoreHistory:    req.StoreHistory,
		UserExpressions: json.RawMessage("{}"),
		AllowStdin:      req.AllowStdin && req.Input != nil,
		// With stop_on_error a request right after an error can come
		// back "aborted" (a race in ipykernel 6.17's _abort_queues).
		StopOnError: false,
	}, nil, in)
	if err != nil {
		select {
		case <-k.done:
			return nil, k.deadError("execute")
		default:
			return nil, fmt.Errorf("jupyter: execute: %w", err)
		}
	}
	defer k.unregister(id)

	c := cell{k: k, req: req, onOutput: onOutput}
	var (
		interrupted bool
		grace       <-chan time.Time
		ctxDone     = ctx.Done()
	)
	for !c.finished() {
		select {
		case <-in.notify:
			c.handle(in.take())
		case <-ctxDone:
			ctxDone = nil
			t := time.NewTimer(k.cfg.InterruptGrace)
			defer t.Stop()
			grace = t.C
			if c.reply != nil {
				break // only the idle is missing; it is on its way
			}
			interrupted = true
			// A failed send leaves the grace timer to kill the kernel.
			_, _ = k.send(k.control, "interrupt_request", struct{}{}, nil, nil)
		case <-grace:
			k.Close()
			if interrupted {
				return c.reply, fmt.Errorf("jupyter: execute: kernel pid %d did not stop within %v of an interrupt and was killed: %w (%w: %w)",
					k.pid, k.cfg.InterruptGrace, ErrDead, ErrInterrupted, ctx.Err())
			}
			return c.reply, fmt.Errorf("jupyter: execute: kernel pid %d did not finish the cell within %v of its reply and was killed: %w (%w)",
				k.pid, k.cfg.InterruptGrace, ErrDead, ctx.Err())
		case <-k.done:
			k.settle()
			c.handle(in.take())
			if c.finished() {
				break
			}
			err := k.deadError("execute")
			if interrupted {
				err = fmt.Errorf("%w (after an interrupt: %w: %w)", err, ErrInterrupted, ctx.Err())
			}
			return c.reply, err
		}
	}
	if interrupted {
		return c.reply, fmt.Errorf("jupyter: execute: %w: %w", ErrInterrupted, ctx.Err())
	}
	return c.reply, nil
}

// cell is the state of one Execute.
type cell struct {
	k        *Kernel
	req      ExecuteRequest
	onOutput func(Output)
	reply    *Reply
	idle     bool
}

func (c *cell) finished() bool { return c.reply != nil && c.idle }

// handle processes messages routed to the cell, in arrival order.
func (c *cell) handle(msgs []*message) {
	for _, m := range msgs {
		var ct content
		if err := json.Unmarshal(m.Content, &ct); err != nil {
			continue // a signed but malformed message: nothing to show
		}
		switch m.Channel + "/" + m.Header.MsgType {
		case "iopub/status":
			if ct.ExecutionState == "idle" {
				c.idle = true
			}
		case "iopub/stream", "iopub/display_data", "iopub/update_display_data",
			"iopub/execute_result", "iopub/error", "iopub/clear_output":
			if c.onOutput != nil {
				c.onOutput(Output{
					Type:           m.Header.MsgType,
					Name:           ct.Name,
					Text:           ct.Text,
					Data:           ct.Data,
					Metadata:       ct.Metadata,
					DisplayID:      ct.Transient.DisplayID,
					ExecutionCount: ct.ExecutionCount,
					EName:          ct.EName,
					EValue:         ct.EValue,
					Traceback:      ct.Traceback,
					Wait:           ct.Wait,
				})
			}
		case "shell/execute_reply":
			c.reply = &Reply{
				Status:         ct.Status,
				ExecutionCount: ct.ExecutionCount,
				EName:          ct.EName,
				EValue:         ct.EValue,
				Traceback:      ct.Traceback,
			}
		case "stdin/input_request":
			var value string
			if c.req.Input != nil {
				v, err := c.req.Input(ct.Prompt, ct.Password)
				if err == nil {
					value = v
				}
			}
			// If this fails the kernel is dying; Execute sees Done.
			_, _ = c.k.send(c.k.stdin, "input_reply", map[string]string{"value": value}, m.HeaderRaw, nil)
		}
	}
}

// Interrupt sends interrupt_request on the control channel and waits for the
// interrupt_reply. The running cell, if any, then ends with KeyboardInterrupt;
// an idle kernel ignores the interrupt.
func (k *Kernel) Interrupt(ctx context.Context) error {
	select {
	case <-k.done:
		return k.deadError("interrupt")
	default:
	}
	in := newInbox()
	id, err := k.send(k.control, "interrupt_request", struct{}{}, nil, in)
	if err != nil {
		return fmt.Errorf("jupyter: interrupt: %w", err)
	}
	defer k.unregister(id)
	for {
		select {
		case <-in.notify:
			for _, m := range in.take() {
				if m.Channel == chanControl && m.Header.MsgType == "interrupt_reply" {
					return nil
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("jupyter: interrupt: waiting for interrupt_reply: %w", ctx.Err())
		case <-k.done:
			return k.deadError("interrupt")
		}
	}
}

// settle waits, briefly, for a dead kernel's sockets to drain and its process
// to be reaped, so that outputs already sent are delivered and deadError can
// name the exit status.
func (k *Kernel) settle() {
	t := time.NewTimer(eofGrace)
	defer t.Stop()
	for _, ch := range []chan struct{}{k.pumpsDone, k.exited} {
		if ch == k.pumpsDone && !k.pumping {
			continue
		}
		select {
		case <-ch:
		case <-t.C:
			return
		}
	}
}

// deadError describes why the kernel is dead; it matches ErrDead. Call it
// only after Done is closed.
func (k *Kernel) deadError(op string) error {
	reason := k.deadReason
	if reason != closedReason {
		select {
		case <-k.exited:
			reason = "kernel process exited"
			if k.waitErr != nil {
				reason += ": " + k.waitErr.Error()
			}
		default:
		}
	}
	return fmt.Errorf("jupyter: %s: kernel pid %d: %w (%s)", op, k.pid, ErrDead, reason)
}
