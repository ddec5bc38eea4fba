package egress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// serverFirstWait is how long a transparent flow to an explicitly listed IP
// may stay silent before it is tunnelled as is (protocols where the server
// speaks first, such as SMTP or MySQL).
const serverFirstWait = time.Second

// serveTransparent serves a redirected flow addressed to dst. A TLS flow is
// judged by its SNI and an HTTP flow by each request's Host: the name must
// be allowed and dst one of its addresses by the proxy's own resolution. A
// flow with no name (TLS without SNI, another protocol, or silence) passes
// only if dst's IP is listed by an IP/CIDR entry.
func (p *Proxy) serveTransparent(ctx context.Context, c *conn, dst netip.AddrPort) {
	listed := p.policy.Load().AllowIP(dst.Addr(), "")
	wait := p.opts.Timeouts.Header
	if listed {
		wait = min(wait, serverFirstWait)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	b, err := c.br.Peek(1)
	switch {
	case err != nil && listed && isTimeout(err):
		p.pipeTo(ctx, c, dst)
		return
	case err != nil:
		if !errors.Is(err, io.EOF) {
			p.deny(c, "", dst.Addr(), reasonNoName)
		}
		return
	case b[0] == 0x16:
		p.serveTLS(ctx, c, dst, listed)
	case b[0] >= 'A' && b[0] <= 'Z':
		p.serveTransparentHTTP(ctx, c, dst)
	case listed:
		p.pipeTo(ctx, c, dst)
	default:
		p.deny(c, "", dst.Addr(), reasonUnknown)
	}
}

func (p *Proxy) serveTLS(ctx context.Context, c *conn, dst netip.AddrPort, listed bool) {
	c.SetReadDeadline(time.Now().Add(p.opts.Timeouts.Header))
	hdr, err := c.br.Peek(5)
	if err != nil {
		p.deny(c, "", dst.Addr(), reasonUnknown)
		return
	}
	n, err := clientHelloLen(hdr)
	if err != nil {
		p.deny(c, "", dst.Addr(), reasonUnknown)
		return
	}
	rec, err := c.br.Peek(n)
	if err != nil {
		reason := reasonUnknown
		if c.limit.N <= 0 {
			reason = reasonHeaderTooLarge
		}
		p.deny(c, "", dst.Addr(), reason)
		return
	}
	sni, err := parseSNI(rec)
	switch {
	case err != nil:
		p.deny(c, "", dst.Addr(), "malformed or fragmented TLS ClientHello")
		return
	case sni == "" && !listed:
		p.deny(c, "", dst.Addr(), reasonNoName)
		return
	case sni != "":
		if err := p.checkTransparent(ctx, sni, dst); err != nil {
			d := err.(*errDenied)
			p.deny(c, sni, d.ip, d.reason)
			return
		}
	}
	p.pipeTo(ctx, c, dst)
}

func (p *Proxy) serveTransparentHTTP(ctx context.Context, c *conn, dst netip.AddrPort) {
	for first := true; ; first = false {
		req, err := p.readRequest(c, first)
		if err != nil {
			p.badRequest(c, err, first)
			return
		}
		if req.Method == http.MethodConnect {
			p.refuse(c, &errDenied{ip: dst.Addr(), reason: "CONNECT on a redirected flow"})
			return
		}
		host := req.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			p.refuse(c, &errDenied{ip: dst.Addr(), reason: reasonNoName})
			return
		}
		if !p.forward(ctx, c, req, host, "", dst) {
			return
		}
	}
}

// pipeTo dials dst (already judged) and tunnels the flow as is, replaying
// any bytes peeked.
func (p *Proxy) pipeTo(ctx context.Context, c *conn, dst netip.AddrPort) {
	c.unlimit()
	c.SetReadDeadline(time.Time{})
	up, err := p.dialAny(ctx, []netip.Addr{dst.Addr()}, strconv.Itoa(int(dst.Port())))
	if err != nil {
		p.log.Debug("egress: dial failed", "dst", dst.String(), "err", err)
		return
	}
	up = c.act.add(up)
	defer up.Close()
	tunnel(c, up)
}
