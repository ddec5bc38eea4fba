package agent

import (
	"bytes"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/ds-sandbox/ds-sandbox/api"
)

const (
	// maxQueuedOutput bounds the undelivered output the agent keeps per
	// process, per stream (stdout, stderr) and per reader: the backlog kept
	// while nobody streams the process, and each stream's queue of output its
	// reader has not taken yet. Beyond it the oldest output is dropped and the
	// reader gets a marker saying how much — a process is never blocked by a
	// slow or absent reader, and the agent's memory stays bounded.
	maxQueuedOutput = 1 << 20
	// maxQueuedChunks bounds the number of chunks of one queue (small writes
	// alternating between stdout and stderr cannot be merged).
	maxQueuedChunks = 4096
	// maxChunk is the size up to which consecutive output of one stream is
	// merged into one event.
	maxChunk = 64 << 10
)

// outChunk is a piece of output of one stream.
type outChunk struct {
	typ  string // api.ProcStdout or api.ProcStderr
	data []byte
}

// outQueue is a bounded queue of output chunks that drops its oldest output
// when full. The zero value is empty; its user locks it.
type outQueue struct {
	chunks  []outChunk
	size    [2]int   // queued bytes per stream
	dropped [2]int64 // dropped bytes per stream since the last drain
}

func streamIndex(typ string) int {
	if typ == api.ProcStderr {
		return 1
	}
	return 0
}

// push appends a copy of b.
func (q *outQueue) push(typ string, b []byte) {
	i := streamIndex(typ)
	if n := len(q.chunks); n > 0 && q.chunks[n-1].typ == typ && len(q.chunks[n-1].data)+len(b) <= maxChunk {
		q.chunks[n-1].data = append(q.chunks[n-1].data, b...)
	} else {
		q.chunks = append(q.chunks, outChunk{typ: typ, data: bytes.Clone(b)})
	}
	q.size[i] += len(b)
	for q.size[i] > maxQueuedOutput {
		q.dropAt(slices.IndexFunc(q.chunks, func(c outChunk) bool { return c.typ == typ }))
	}
	for len(q.chunks) > maxQueuedChunks {
		q.dropAt(0)
	}
}

func (q *outQueue) dropAt(j int) {
	c := q.chunks[j]
	i := streamIndex(c.typ)
	q.size[i] -= len(c.data)
	q.dropped[i] += int64(len(c.data))
	q.chunks = slices.Delete(q.chunks, j, j+1)
}

// empty reports whether drain would return nothing.
func (q *outQueue) empty() bool {
	return len(q.chunks) == 0 && q.dropped == [2]int64{}
}

// drain returns the queued output as events, preceded by a marker per stream
// that lost output, and empties q.
func (q *outQueue) drain() []api.ProcessEvent {
	if q.empty() {
		return nil
	}
	evs := make([]api.ProcessEvent, 0, len(q.chunks)+2)
	for i, typ := range []string{api.ProcStdout, api.ProcStderr} {
		if n := q.dropped[i]; n > 0 {
			evs = append(evs, api.ProcessEvent{Type: typ, Data: fmt.Sprintf(
				"\n[ds-sandbox: %d bytes of %s dropped: more than %d KiB waited for a reader]\n", n, typ, maxQueuedOutput>>10)})
		}
	}
	for _, c := range q.chunks {
		evs = append(evs, api.ProcessEvent{Type: c.typ, Data: string(c.data)})
	}
	*q = outQueue{}
	return evs
}

// appendQueue moves the content of src to the end of q.
func (q *outQueue) appendQueue(src *outQueue) {
	for i := range q.dropped {
		q.dropped[i] += src.dropped[i]
	}
	for _, c := range src.chunks {
		q.push(c.typ, c.data)
	}
	*src = outQueue{}
}

// completeUTF8 returns the length of the longest prefix of b that does not
// end inside a multi-byte UTF-8 sequence, so a chunk boundary never splits a
// character (which would show as two replacement characters).
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}
