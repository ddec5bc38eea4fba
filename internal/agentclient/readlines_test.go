package agentclient

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReadLines: only whole lines reach fn; a stream cut inside a line, a
// line over the bound and a read error are errors, never a torn line.
func TestReadLines(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("z", 200<<10) // longer than the reader's buffer
	tests := []struct {
		name    string
		in      io.Reader
		max     int
		want    []string
		wantErr error
	}{
		{"whole lines", strings.NewReader("a\nbb\n\nc\n"), 10, []string{"a", "bb", "", "c"}, nil},
		{"empty", strings.NewReader(""), 10, nil, nil},
		{"cut inside a line", strings.NewReader("a\n{\"type\":\"std"), 10, []string{"a"}, errTorn},
		{"long line", strings.NewReader(long + "\n" + "b\n"), 1 << 20, []string{long, "b"}, nil},
		{"cut inside a long line", strings.NewReader("a\n" + long), 1 << 20, []string{"a"}, errTorn},
		{"too long", strings.NewReader(long + "\n"), 100 << 10, nil, errLineTooLong},
		{"read error inside a line", io.MultiReader(strings.NewReader("a\nb"), iotest.ErrReader(io.ErrUnexpectedEOF)), 10, []string{"a"}, errTorn},
		{"read error between lines", io.MultiReader(strings.NewReader("a\n"), iotest.ErrReader(io.ErrUnexpectedEOF)), 10, []string{"a"}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			err := ReadLines(tt.in, tt.max, func(line []byte) error {
				got = append(got, string(line))
				return nil
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Fatalf("lines %q, want %q", got, tt.want)
			}
		})
	}
	stop := errors.New("stop")
	if err := ReadLines(strings.NewReader("a\nb\n"), 10, func([]byte) error { return stop }); err != stop {
		t.Fatalf("fn's error: %v", err)
	}
}
