package pyengine

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxFrameBytes is the largest frame Go accepts from an engine when
// Config.MaxFrameBytes or ForkConfig.MaxFrameBytes is zero: one output (a
// plot, an HTML table) may be this large.
const DefaultMaxFrameBytes = 64 << 20

// minMaxFrameBytes is the smallest limit allowed: a stream chunk (1 MiB of
// UTF-8, more once JSON-escaped) must fit.
const minMaxFrameBytes = 8 << 20

// errFrameTooLarge reports a frame over the limit.
var errFrameTooLarge = errors.New("frame too large")

// readFrame reads one frame of at most max bytes of body. It never allocates
// more than max bytes, whatever the header says.
func readFrame(r io.Reader, max int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", errFrameTooLarge, n, max)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// encodeFrame encodes v as one frame.
func encodeFrame(v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(body) > 1<<30 {
		return nil, fmt.Errorf("%w: %d bytes to send, over the 1 GiB limit", errFrameTooLarge, len(body))
	}
	b := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	return append(b, body...), nil
}

// inFrame is the union of the fields of the frames an engine or zygote sends.
type inFrame struct {
	T         string                     `json:"t"`
	Seq       uint64                     `json:"seq"`
	N         uint64                     `json:"n"`
	PID       int                        `json:"pid"`
	Error     string                     `json:"error"`
	Module    string                     `json:"module"`
	Type      string                     `json:"type"`
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
	Status         string   `json:"status"`
	Prompt         string   `json:"prompt"`
	Password       bool     `json:"password"`
}

// decodeFrame reads and decodes one frame.
func decodeFrame(r io.Reader, max int) (*inFrame, error) {
	body, err := readFrame(r, max)
	if err != nil {
		return nil, err
	}
	var f inFrame
	if err := json.Unmarshal(body, &f); err != nil {
		return nil, fmt.Errorf("malformed frame: %w", err)
	}
	if f.T == "" {
		return nil, errors.New(`malformed frame: no "t" field`)
	}
	return &f, nil
}
