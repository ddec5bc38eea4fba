// Package eventstream writes a stream of events to an HTTP client as NDJSON
// (one JSON value a line, flushed as it goes) without ever blocking the
// producer on the client.
//
// Events wait in a bounded queue for the Writer's goroutine. When the client
// reads slower than the producer, events the caller marks droppable are
// dropped past the bound (and counted, so the caller can say so in-band);
// the others (notices, final events) are always kept. A client that takes no
// event for WriteTimeout is cut: the connection's write deadline ends the
// write, the rest of the stream is discarded and OnBroken is called, so the
// producer can stop its work. A cut client never receives a partial line that
// looks complete: every line is written in one Write and a cut response lacks
// the chunked terminator, so HTTP clients see the stream as broken.
package eventstream

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"sync"
	"time"
)

// Options configure a Writer.
type Options[T any] struct {
	// MaxQueued bounds the bytes (as Size counts them) waiting for the client.
	MaxQueued int
	// WriteTimeout is how long the client may take to accept one event
	// before it is cut. It must be positive.
	WriteTimeout time.Duration
	// Size estimates an event's encoded size.
	Size func(T) int
	// Droppable reports whether an event may be dropped when the queue is
	// full (nil: none may be).
	Droppable func(T) bool
	// OnBroken, when set, is called once, from the writer goroutine, when a
	// write fails (the client is gone or was cut for stalling).
	OnBroken func(error)
}

// Writer streams events to one HTTP response. Send may be called from any
// goroutine; Close once, when the producer is done.
type Writer[T any] struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	enc *json.Encoder
	opt Options[T]

	mu      sync.Mutex
	cond    *sync.Cond
	items   []T
	bytes   int
	drops   int
	sent    bool  // Send was called at least once
	closed  bool  // Close was called
	err     error // the write error that broke the stream
	done    chan struct{}
	started bool // the writer goroutine runs
}

// ErrStalled is the error OnBroken and Close report when the client took no
// event for WriteTimeout.
var ErrStalled = errors.New("the client stopped reading the stream")

// New returns a Writer over w. Nothing is written to w before the first
// event, so a caller that sends no event may still answer with an error of
// its own after Close. The caller sets the response's headers before the
// first Send (an unset status is an implicit 200).
func New[T any](w http.ResponseWriter, opt Options[T]) *Writer[T] {
	if opt.WriteTimeout <= 0 {
		panic("eventstream: WriteTimeout must be positive")
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	s := &Writer[T]{w: w, rc: http.NewResponseController(w), enc: enc, opt: opt, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Send queues ev. It never blocks on the client: past MaxQueued a droppable
// event is dropped (see Dropped), and after the stream broke every event is
// discarded.
func (s *Writer[T]) Send(ev T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.sent = true
	if !s.started {
		s.started = true
		go s.run() // owned by s: ends when Close was called and the queue is empty
	}
	if s.err != nil {
		return
	}
	n := s.opt.Size(ev)
	if s.bytes+n > s.opt.MaxQueued && s.opt.Droppable != nil && s.opt.Droppable(ev) {
		s.drops++
		return
	}
	s.items = append(s.items, ev)
	s.bytes += n
	s.cond.Signal()
}

// Started reports whether an event was sent: from then on the response
// belongs to the Writer.
func (s *Writer[T]) Started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// Dropped returns how many events were dropped for a slow client so far.
func (s *Writer[T]) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops
}

// Err returns the error that broke the stream, or nil.
func (s *Writer[T]) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close waits until every queued event was written (or the stream broke)
// and returns the error that broke it. It is bounded by WriteTimeout per
// queued event.
func (s *Writer[T]) Close() error {
	s.mu.Lock()
	s.closed = true
	started := s.started
	s.cond.Signal()
	s.mu.Unlock()
	if started {
		<-s.done
	}
	return s.Err()
}

func (s *Writer[T]) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		for len(s.items) == 0 && !s.closed {
			s.cond.Wait()
		}
		if len(s.items) == 0 {
			s.mu.Unlock()
			return
		}
		ev := s.items[0]
		var zero T
		s.items[0] = zero
		s.items = s.items[1:]
		s.bytes -= s.opt.Size(ev)
		s.mu.Unlock()

		if err := s.write(ev); err != nil {
			s.mu.Lock()
			s.err = err
			s.items, s.bytes = nil, 0
			s.mu.Unlock()
			if s.opt.OnBroken != nil {
				s.opt.OnBroken(err)
			}
		}
	}
}

// write sends one event as one line (json.Encoder writes it in one Write)
// and flushes it, within WriteTimeout.
func (s *Writer[T]) write(ev T) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.opt.WriteTimeout))
	err := s.enc.Encode(ev)
	if err == nil {
		err = s.rc.Flush()
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return errors.Join(ErrStalled, err)
	}
	return err
}
