package agentclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// maxStreamLine bounds one NDJSON line a client accepts (a 20 MB display_data
// is plausible; a line without end is not).
const maxStreamLine = 256 << 20

// Client speaks the agent protocol over a unix socket (or any base URL with a
// custom transport, for the daemon's proxy). It is safe for concurrent use.
type Client struct {
	hc   *http.Client
	base string
}

// NewClient returns a client for the agent listening on the unix socket at path.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{hc: &http.Client{Transport: tr}, base: "http://agent"}
}

// NewHTTPClient returns a client for an agent protocol served at base (for
// example the daemon's per-sandbox routes), using hc.
func NewHTTPClient(hc *http.Client, base string) *Client {
	return &Client{hc: hc, base: base}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Health returns nil when the agent answers.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/health", nil, nil, nil)
}

// request builds a request; body is JSON-encoded unless it is an io.Reader.
func (c *Client) request(ctx context.Context, method, p string, q url.Values, body any) (*http.Request, error) {
	u := c.base + p
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, ctype = b, "application/octet-stream"
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd, ctype = bytes.NewReader(buf), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req, nil
}

// send performs a request and returns the response when its status is 2xx, or
// the decoded api.Error otherwise.
func (c *Client) send(ctx context.Context, method, p string, q url.Values, body any) (*http.Response, error) {
	req, err := c.request(ctx, method, p, q, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("agent: %v: %w", err, api.ErrUnavailable)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e api.Error
	if json.Unmarshal(b, &e) == nil && e.Code != "" {
		return &e
	}
	return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("agent: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))}
}

// do performs a JSON request and decodes a JSON response into out (when non-nil).
func (c *Client) do(ctx context.Context, method, p string, q url.Values, body, out any) error {
	resp, err := c.send(ctx, method, p, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("agent: decode %s %s: %w", method, p, err)
	}
	return nil
}

// stream performs a request whose response is NDJSON and calls fn for each line
// until the stream ends, fn returns an error, or ctx is done. Only whole lines
// reach fn: a stream cut inside a line (the connection broke, or the agent
// cut us for reading too slowly) is an error wrapping api.ErrUnavailable,
// never a torn event.
func (c *Client) stream(ctx context.Context, method, p string, q url.Values, body any, fn func(line []byte) error) error {
	resp, err := c.send(ctx, method, p, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var fnErr error
	err = ReadLines(resp.Body, maxStreamLine, func(line []byte) error {
		fnErr = fn(line)
		return fnErr
	})
	switch {
	case err == nil:
		return nil
	case fnErr != nil:
		return fnErr
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("agent: stream %s: %v: %w", p, err, api.ErrUnavailable)
}

var (
	errTorn        = errors.New("the stream was cut inside an event")
	errLineTooLong = errors.New("a stream line is too long")
)

// ReadLines calls fn for every newline-terminated line of r (without the
// newline) until r ends or fn returns an error, which it returns. A line
// longer than max, and data after the last newline (a stream cut inside a
// line), are errors: a torn line never reaches fn. A read error other than
// io.EOF is returned after the lines before it.
func ReadLines(r io.Reader, max int, fn func(line []byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // a line longer than the buffer, being assembled
	for {
		frag, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			line := frag[:len(frag)-1]
			if long != nil {
				if len(long)+len(line) > max {
					return errLineTooLong
				}
				line = append(long, line...)
				long = nil
			}
			if err := fn(line); err != nil {
				return err
			}
			continue
		case errors.Is(err, bufio.ErrBufferFull):
			if len(long)+len(frag) > max {
				return errLineTooLong
			}
			long = append(long, frag...)
			continue
		case errors.Is(err, io.EOF):
			if len(frag) > 0 || long != nil {
				return errTorn
			}
			return nil
		}
		if len(frag) > 0 || long != nil {
			return fmt.Errorf("%w: %v", errTorn, err)
		}
		return err
	}
}
