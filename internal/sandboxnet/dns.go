package sandboxnet

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
)

// The DNS server answers A queries for names the policy allows with the
// addresses the policy allows (never a special address a name does not
// unlock, so DNS rebinding gets nothing), AAAA queries and other types with
// no records (the sandbox has no IPv6 route; the proxy and rules are the
// enforcement, not this), and names the policy refuses with NXDOMAIN, so
// programs fail at once instead of retrying. Every refusal of a name is a
// denial.

const (
	dnsTTL        = 30
	dnsMaxAnswers = 16
	dnsTimeout    = 5 * time.Second
	dnsMaxUDP     = 512  // without EDNS0
	dnsEDNSUDP    = 1232 // what we accept and advertise with EDNS0
	dnsMaxInFly   = 64   // concurrent UDP queries; more are dropped
)

// answer builds the response to one query message; ok=false means no
// answer at all (not even a parsable header).
func (n *Net) answer(ctx context.Context, req []byte, maxSize int) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil || h.Response {
		return nil, false
	}
	resp := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		resp.RCode = dnsmessage.RCodeFormatError
		return build(resp, nil, nil, maxSize), true
	}
	q := qs[0]
	if h.OpCode != 0 {
		resp.RCode = dnsmessage.RCodeNotImplemented
		return build(resp, &q, nil, maxSize), true
	}
	if edns := hasEDNS(&p); edns > 0 {
		maxSize = max(maxSize, min(edns, dnsEDNSUDP))
	}
	name := strings.TrimSuffix(q.Name.String(), ".")
	pol := n.policy.Load()
	if q.Class != dnsmessage.ClassINET || name == "" {
		resp.RCode = dnsmessage.RCodeRefused
		return build(resp, &q, nil, maxSize), true
	}
	if !allowName(pol, name) {
		resp.RCode = dnsmessage.RCodeNameError
		if q.Type == dnsmessage.TypeA {
			n.deny(api.NetworkDenial{Time: time.Now(), Host: name, Reason: "DNS: name not allowed by the network policy"})
		}
		return build(resp, &q, nil, maxSize), true
	}
	if q.Type != dnsmessage.TypeA {
		return build(resp, &q, nil, maxSize), true // no records of that type
	}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	addrs, err := n.resolver.lookup(ctx, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			resp.RCode = dnsmessage.RCodeNameError
		} else {
			resp.RCode = dnsmessage.RCodeServerFailure
		}
		return build(resp, &q, nil, maxSize), true
	}
	var ok []netip.Addr
	refused := false
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		if !pol.AllowIP(a, name) {
			refused = true
			continue
		}
		if len(ok) < dnsMaxAnswers {
			ok = append(ok, a)
		}
	}
	if len(ok) == 0 && refused {
		resp.RCode = dnsmessage.RCodeNameError
		n.deny(api.NetworkDenial{Time: time.Now(), Host: name, IP: addrs[0].Unmap().String(), Reason: "DNS: resolves only to refused addresses (private, loopback, link-local, metadata or unlisted)"})
	}
	return build(resp, &q, ok, maxSize), true
}

// allowName: under allow every name, under whitelist the listed ones,
// under deny none.
func allowName(pol *netpolicy.Policy, name string) bool {
	if _, err := netip.ParseAddr(name); err == nil {
		return false // not a name
	}
	return pol.AllowHost(name)
}

// hasEDNS returns the UDP size of an EDNS0 OPT record in the additional
// section, or 0.
func hasEDNS(p *dnsmessage.Parser) int {
	if p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		return 0
	}
	for {
		h, err := p.AdditionalHeader()
		if err != nil {
			return 0
		}
		if h.Type == dnsmessage.TypeOPT {
			return int(h.Class)
		}
		if p.SkipAdditional() != nil {
			return 0
		}
	}
}

// build encodes a response; one that does not fit maxSize is truncated
// (TC set, no answers) so the client retries over TCP.
func build(h dnsmessage.Header, q *dnsmessage.Question, addrs []netip.Addr, maxSize int) []byte {
	out, err := encode(h, q, addrs)
	if err == nil && len(out) <= maxSize {
		return out
	}
	h.Truncated = true
	out, _ = encode(h, q, nil)
	return out
}

func encode(h dnsmessage.Header, q *dnsmessage.Question, addrs []netip.Addr) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	if q != nil {
		if err := b.StartQuestions(); err != nil {
			return nil, err
		}
		if err := b.Question(*q); err != nil {
			return nil, err
		}
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		for _, a := range addrs {
			rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: dnsTTL}
			if err := b.AResource(rh, dnsmessage.AResource{A: a.As4()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// serveDNSUDP answers UDP queries until ctx is done.
func (n *Net) serveDNSUDP(ctx context.Context, pc net.PacketConn) {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	sem := make(chan struct{}, dnsMaxInFly)
	buf := make([]byte, 4096)
	for {
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // overloaded: drop, the client retries
		}
		req := append([]byte(nil), buf[:k]...)
		go func() {
			defer func() { <-sem }()
			if resp, ok := n.answer(ctx, req, dnsMaxUDP); ok {
				_, _ = pc.WriteTo(resp, from)
			}
		}()
	}
}

// serveDNSTCP answers TCP queries (2-byte length prefix) until ctx is done.
func (n *Net) serveDNSTCP(ctx context.Context, ln net.Listener) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	sem := make(chan struct{}, dnsMaxInFly)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		go func() {
			defer func() { <-sem }()
			defer c.Close()
			stopConn := context.AfterFunc(ctx, func() { c.Close() })
			defer stopConn()
			for {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				req := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				resp, ok := n.answer(ctx, req, 65535)
				if !ok {
					return
				}
				out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
				if _, err := c.Write(append(out, resp...)); err != nil {
					return
				}
			}
		}()
	}
}
