package eventstream_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/eventstream"
)

type event struct {
	Type string `json:"type"`
	N    int    `json:"n"`
	Text string `json:"text,omitempty"`
}

// TestStalledClientIsCut: a raw TCP client that stops reading is cut after
// WriteTimeout while the producer never blocks (events are dropped for it);
// when it reads again it gets whole lines and then a broken body, never a
// torn event parsed as complete.
func TestStalledClientIsCut(t *testing.T) {
	t.Parallel()
	type outcome struct {
		dropped int
		err     error
		sent    int
	}
	done := make(chan outcome, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		broken := make(chan struct{})
		w.Header().Set("Content-Type", "application/x-ndjson")
		out := eventstream.New(w, eventstream.Options[event]{
			MaxQueued: 1 << 20, WriteTimeout: 500 * time.Millisecond,
			Size:      func(e event) int { return len(e.Text) + 32 },
			Droppable: func(e event) bool { return e.Type == "stdout" },
			OnBroken:  func(error) { close(broken) },
		})
		text := strings.Repeat("x", 64<<10)
		n := 0
	produce: // until the client is cut; Send must never block meanwhile
		for {
			select {
			case <-broken:
				break produce
			case <-r.Context().Done():
				break produce
			default:
			}
			n++
			out.Send(event{Type: "stdout", N: n, Text: text})
			time.Sleep(time.Millisecond)
		}
		out.Send(event{Type: "end", N: n})
		err := out.Close()
		done <- outcome{dropped: out.Dropped(), err: err, sent: n}
	}))
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A small receive buffer, so the server's writes block soon.
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(16 << 10)
	}
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("response %d %v", resp.StatusCode, resp.Header)
	}
	// Stop reading until the server gave up on us.
	var o outcome
	select {
	case o = <-done:
	case <-t.Context().Done():
		t.Fatal("the stalled client was never cut")
	}
	if !errors.Is(o.err, eventstream.ErrStalled) {
		t.Fatalf("Close: %v, want ErrStalled", o.err)
	}
	if o.dropped == 0 {
		t.Fatalf("nothing was dropped for the stalled client (%d events sent): the producer was held back", o.sent)
	}
	// Resume: every line that arrives whole is a whole event; the stream
	// does not end cleanly (the chunked body is unterminated).
	rd := bufio.NewReader(resp.Body)
	lines := 0
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatalf("the cut stream ended cleanly after %d lines (torn tail %d bytes)", lines, len(line))
			}
			break
		}
		var ev event
		if jerr := json.Unmarshal(line, &ev); jerr != nil {
			t.Fatalf("line %d is not a whole event: %v", lines, jerr)
		}
		if ev.Type == "end" {
			t.Fatalf("the end event reached a client that was cut")
		}
		lines++
	}
}

// TestSlowClientGetsEverythingEssential: a client that reads slowly but
// steadily is not cut; droppable events may be dropped, the others arrive in
// order, and nothing is written before the first Send.
func TestSlowClientGetsEverythingEssential(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := eventstream.New(w, eventstream.Options[event]{
			MaxQueued: 1 << 10, WriteTimeout: 10 * time.Second,
			Size:      func(e event) int { return len(e.Text) + 32 },
			Droppable: func(e event) bool { return e.Type == "stdout" },
		})
		if r.URL.Query().Get("none") != "" {
			if out.Started() || out.Close() != nil {
				t.Error("a Writer with no event started")
			}
			http.Error(w, "answered by the caller", http.StatusTeapot)
			return
		}
		for i := range 200 {
			out.Send(event{Type: "stdout", N: i, Text: strings.Repeat("y", 512)})
		}
		out.Send(event{Type: "notice", Text: fmt.Sprintf("%d dropped", out.Dropped())})
		out.Send(event{Type: "end"})
		if err := out.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}))
	t.Cleanup(srv.Close)

	r, err := http.Get(srv.URL + "?none=1")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusTeapot {
		t.Fatalf("caller's own answer after an empty stream: %d", r.StatusCode)
	}

	r, err = http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var types []string
	last := -1
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		time.Sleep(time.Millisecond) // a slow reader
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		if ev.Type == "stdout" {
			if ev.N <= last {
				t.Fatalf("stdout %d after %d: out of order", ev.N, last)
			}
			last = ev.N
			continue
		}
		types = append(types, ev.Type)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(types, ",") != "notice,end" {
		t.Fatalf("essential events %v, want notice,end", types)
	}
}
