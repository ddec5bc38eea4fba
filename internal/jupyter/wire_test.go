package jupyter

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestWireRoundTrip(t *testing.T) {
	t.Parallel()
	s := &signer{key: []byte("secret"), session: "sess"}
	parent := json.RawMessage(`{"msg_id":"p1","msg_type":"execute_request"}`)
	frames, id, err := s.encode("input_reply", map[string]string{"value": "x"}, parent)
	if err != nil {
		t.Fatal(err)
	}
	// iopub prepends a topic and ROUTER sockets routing identities.
	withTopic := append([][]byte{[]byte("kernel.abc.stream")}, frames...)
	withBuffers := append(append([][]byte(nil), frames...), []byte("buf"))
	for name, fr := range map[string][][]byte{"plain": frames, "topic": withTopic, "buffers": withBuffers} {
		m, err := s.decode(fr)
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		if m.Header.MsgID != id || m.Header.MsgType != "input_reply" || m.Header.Session != "sess" ||
			m.Header.Version != "5.3" || m.ParentID != "p1" || string(m.Content) != `{"value":"x"}` {
			t.Errorf("%s: decoded %+v", name, m)
		}
		if _, err := time.Parse(time.RFC3339Nano, m.Header.Date); err != nil || m.Header.Date[len(m.Header.Date)-1] != 'Z' {
			t.Errorf("%s: date %q is not RFC 3339 UTC: %v", name, m.Header.Date, err)
		}
	}
	if m, _ := s.decode(withBuffers); len(m.Buffers) != 1 || string(m.Buffers[0]) != "buf" {
		t.Errorf("buffers = %q", m.Buffers)
	}
}

func TestWireRejects(t *testing.T) {
	t.Parallel()
	s := &signer{key: []byte("secret"), session: "sess"}
	frames, _, err := s.encode("stream", map[string]string{"text": "hi"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := &signer{key: []byte("other"), session: "sess"}
	tampered := append([][]byte(nil), frames...)
	tampered[5] = []byte(`{"text":"forged"}`)

	tests := []struct {
		name   string
		s      *signer
		frames [][]byte
		want   error
	}{
		{"wrong key", other, frames, errSignature},
		{"tampered content", s, tampered, errSignature},
		{"no delimiter", s, frames[1:], errNoDelimiter},
		{"too short", s, frames[:4], errShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.s.decode(tt.frames); !errors.Is(err, tt.want) {
				t.Errorf("decode = %v, want %v", err, tt.want)
			}
		})
	}
}
