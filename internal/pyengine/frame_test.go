package pyengine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestReadFrame(t *testing.T) {
	t.Parallel()
	frame := func(n uint32, body string) []byte {
		b := binary.BigEndian.AppendUint32(nil, n)
		return append(b, body...)
	}
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr error
	}{
		{name: "ok", in: frame(9, `{"t":"x"}`), want: `{"t":"x"}`},
		{name: "empty body", in: frame(0, ""), want: ""},
		{name: "over the limit", in: frame(1<<20+1, ""), wantErr: errFrameTooLarge},
		{name: "huge header", in: frame(0xffffffff, ""), wantErr: errFrameTooLarge},
		{name: "short header", in: []byte{0, 0}, wantErr: io.ErrUnexpectedEOF},
		{name: "nothing", in: nil, wantErr: io.EOF},
		{name: "short body", in: frame(10, "abc"), wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readFrame(bytes.NewReader(tt.in), 1<<20)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("readFrame = %q, %v; want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("readFrame = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestEncodeDecodeFrame(t *testing.T) {
	t.Parallel()
	b, err := encodeFrame(map[string]any{"t": "out", "seq": 7, "text": "héllo"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := decodeFrame(bytes.NewReader(b), 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if f.T != "out" || f.Seq != 7 || f.Text != "héllo" {
		t.Fatalf("decoded %+v", f)
	}
	if _, err := decodeFrame(bytes.NewReader(append(binary.BigEndian.AppendUint32(nil, 2), "{}"...)), 10); err == nil {
		t.Fatal(`a frame without "t" decoded`)
	}
}

// FuzzDecodeFrame: whatever an engine sends, the decoder returns an error or
// a frame, never panics and never allocates past its limit.
func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x09{\"t\":\"x\"}"))
	f.Add([]byte("\xff\xff\xff\xff"))
	f.Add([]byte("\x00\x00\x00\x02{}"))
	f.Add([]byte("\x00\x00\x00\x1c{\"t\":\"out\",\"data\":{\"a\":1}}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 4096
		r := bytes.NewReader(in)
		for {
			before := r.Len()
			fr, err := decodeFrame(r, max)
			if err != nil {
				if errors.Is(err, errFrameTooLarge) && before-r.Len() != 4 {
					t.Fatalf("an oversized frame consumed %d bytes, want only its header", before-r.Len())
				}
				return
			}
			if fr.T == "" {
				t.Fatal("decoded a frame without a type")
			}
			if before-r.Len() > max+4 {
				t.Fatalf("consumed %d bytes for one frame, limit %d", before-r.Len(), max)
			}
		}
	})
}
