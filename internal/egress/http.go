package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

var errHeaderTooLarge = errors.New("header too large")

// readRequest reads one request header within Timeouts.Header and
// MaxHeaderBytes. The first byte of a follow-up request may take up to
// Timeouts.Idle.
func (p *Proxy) readRequest(c *conn, first bool) (*http.Request, error) {
	if !first {
		c.SetReadDeadline(time.Now().Add(p.opts.Timeouts.Idle))
		if _, err := c.br.Peek(1); err != nil {
			return nil, err
		}
	}
	c.SetReadDeadline(time.Now().Add(p.opts.Timeouts.Header))
	c.resetLimit(p.opts.MaxHeaderBytes)
	// A request starts with a method token; anything else (a TLS record,
	// binary) is refused at once instead of waiting for a line end.
	if b, err := c.br.Peek(1); err != nil {
		return nil, err
	} else if b[0] < 'A' || b[0] > 'Z' {
		return nil, errors.New("not an HTTP request")
	}
	req, err := http.ReadRequest(c.br)
	if err != nil {
		if c.limit.N <= 0 {
			return nil, errHeaderTooLarge
		}
		return nil, err
	}
	c.unlimit()
	c.SetReadDeadline(time.Time{})
	return req, nil
}

// serveProxy serves a client that talks to the proxy as a proxy: CONNECT or
// absolute-form http:// requests, possibly several on one connection.
func (p *Proxy) serveProxy(ctx context.Context, c *conn) {
	for first := true; ; first = false {
		req, err := p.readRequest(c, first)
		if err != nil {
			p.badRequest(c, err, first)
			return
		}
		switch {
		case req.Method == http.MethodConnect:
			p.connect(ctx, c, req)
			return
		case !req.URL.IsAbs():
			p.refuse(c, &errDenied{host: req.Host, reason: "not a proxy request (want CONNECT or an absolute http:// URL)"})
			return
		case req.URL.Scheme != "http":
			p.refuse(c, &errDenied{host: req.URL.Hostname(), reason: reasonScheme})
			return
		}
		host, port, err := splitTarget(req.URL.Host, "80")
		if err != nil {
			p.refuse(c, &errDenied{host: req.URL.Host, reason: reasonBadRequest})
			return
		}
		if !p.forward(ctx, c, req, host, port, netip.AddrPort{}) {
			return
		}
	}
}

// badRequest answers a request header that could not be read.
func (p *Proxy) badRequest(c *conn, err error, first bool) {
	switch {
	case errors.Is(err, errHeaderTooLarge):
		p.deny(c, "", netip.Addr{}, reasonHeaderTooLarge)
		writeStatus(c, http.StatusRequestHeaderFieldsTooLarge, reasonHeaderTooLarge)
	case first && !errors.Is(err, io.EOF) && !isTimeout(err):
		p.deny(c, "", netip.Addr{}, reasonBadRequest)
		writeStatus(c, http.StatusBadRequest, reasonBadRequest)
	}
}

// connect serves a CONNECT request: check, dial, answer 200 and tunnel, or
// answer 403 (denied) or 502 (unreachable).
func (p *Proxy) connect(ctx context.Context, c *conn, req *http.Request) {
	host, port, err := splitTarget(req.RequestURI, "")
	if err != nil {
		p.refuse(c, &errDenied{host: req.RequestURI, reason: reasonBadRequest})
		return
	}
	ips, err := p.allowedAddrs(ctx, host)
	if err != nil {
		p.refuse(c, err)
		return
	}
	up, err := p.dialAny(ctx, ips, port)
	if err != nil {
		p.log.Debug("egress: dial failed", "host", host, "err", err)
		writeStatus(c, http.StatusBadGateway, "cannot reach "+host)
		return
	}
	up = c.act.add(up)
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		return
	}
	tunnel(c, up)
}

// forward sends one request upstream and copies the response back. In proxy
// mode (dst invalid) host is checked and resolved; in transparent mode the
// request's host must be allowed and dst one of its addresses. It reports
// whether the client connection may serve another request.
func (p *Proxy) forward(ctx context.Context, c *conn, req *http.Request, host, port string, dst netip.AddrPort) bool {
	var ips []netip.Addr
	if dst.IsValid() {
		if err := p.checkTransparent(ctx, host, dst); err != nil {
			p.refuse(c, err)
			return false
		}
		ips, port = []netip.Addr{dst.Addr()}, fmt.Sprint(dst.Port())
	} else {
		var err error
		if ips, err = p.allowedAddrs(ctx, host); err != nil {
			p.refuse(c, err)
			return false
		}
	}
	up, err := p.dialAny(ctx, ips, port)
	if err != nil {
		p.log.Debug("egress: dial failed", "host", host, "err", err)
		writeStatus(c, http.StatusBadGateway, "cannot reach "+host)
		return false
	}
	up = c.act.add(up)
	defer up.Close()

	clientClose := req.Close
	removeHopHeaders(req.Header)
	req.Close = true // one upstream connection per request
	// The proxy answers "Expect: 100-continue" itself (the destination is
	// already judged), so req.Write can send the body straight away.
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		req.Header.Del("Expect")
		if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false
		}
	}
	// A server may answer and close before reading the whole body: a failed
	// write still gets its response read, but ends the client connection
	// (the rest of the body is unread).
	if werr := req.Write(up); werr != nil {
		clientClose = true
	}
	ubr := newReader(up)
	resp, err := http.ReadResponse(ubr, req)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(ubr, req) // informational responses are dropped
	}
	if err != nil {
		writeStatus(c, http.StatusBadGateway, "upstream sent no valid response")
		return false
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	// A body delimited only by the upstream closing cannot be followed by
	// another response on the client connection.
	resp.Close = clientClose || resp.ContentLength < 0 && len(resp.TransferEncoding) == 0
	if err := resp.Write(c); err != nil {
		return false
	}
	return !resp.Close
}

// hopHeaders are connection-level and never forwarded (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// refuse reports err (an *errDenied) and answers 403.
func (p *Proxy) refuse(c *conn, err error) {
	d, ok := err.(*errDenied)
	if !ok {
		d = &errDenied{reason: err.Error()}
	}
	p.deny(c, d.host, d.ip, d.reason)
	writeStatus(c, http.StatusForbidden, d.reason)
}

// writeStatus answers a short plain-text error and marks the connection closed.
func writeStatus(c net.Conn, code int, msg string) {
	body := "ds-sandbox egress proxy: " + msg + "\n"
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
}
