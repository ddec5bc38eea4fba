package egress

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Denial reasons.
const (
	reasonHostNotAllowed = "host not in the whitelist"
	reasonIPNotListed    = "IP literal not listed by an IP/CIDR entry"
	reasonIPRefused      = "resolves only to refused addresses (private, loopback, link-local, metadata or unlisted)"
	reasonResolve        = "name does not resolve"
	reasonMismatch       = "original destination is not an address of the SNI/Host name"
	reasonNoName         = "no SNI or Host to judge and the destination IP is not listed"
	reasonUnknown        = "neither a TLS ClientHello nor an HTTP request"
	reasonBadRequest     = "malformed request"
	reasonHeaderTooLarge = "request header or ClientHello too large"
	reasonScheme         = "only http:// requests can be forwarded; use CONNECT for https"
)

// errDenied carries the denial reason; the caller reports it.
type errDenied struct {
	host   string
	ip     netip.Addr
	reason string
}

func (e *errDenied) Error() string { return "denied: " + e.reason }

// splitTarget splits "host:port" (or "host" with defPort), unbracketing IPv6.
func splitTarget(hostport, defPort string) (host, port string, err error) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else {
		host, port = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), defPort
	}
	n, err := strconv.Atoi(port)
	if host == "" || err != nil || n <= 0 || n > 65535 {
		return "", "", fmt.Errorf("bad target %q", hostport)
	}
	return host, port, nil
}

// allowedAddrs returns the addresses host may be reached at: an IP literal
// must be listed by an IP/CIDR entry; a name must be allowed and is resolved
// by the proxy's resolver, keeping only the addresses AllowIP accepts.
func (p *Proxy) allowedAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.Zone() != "" || !p.policy.Load().AllowIP(ip, "") {
			return nil, &errDenied{ip: ip, reason: reasonIPNotListed}
		}
		return []netip.Addr{ip}, nil
	}
	if !p.policy.Load().AllowHost(host) {
		return nil, &errDenied{host: host, reason: reasonHostNotAllowed}
	}
	ips, err := p.resolve(ctx, host)
	if err != nil {
		return nil, &errDenied{host: host, reason: reasonResolve}
	}
	var ok []netip.Addr
	for _, ip := range ips {
		if p.policy.Load().AllowIP(ip, host) {
			ok = append(ok, ip)
		}
	}
	if len(ok) == 0 {
		var first netip.Addr
		if len(ips) > 0 {
			first = ips[0]
		}
		return nil, &errDenied{host: host, ip: first, reason: reasonIPRefused}
	}
	return ok, nil
}

func (p *Proxy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeouts.Dial)
	defer cancel()
	ips, err := p.opts.Resolver(ctx, strings.TrimSuffix(host, "."))
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.Unmap())
	}
	return out, nil
}

// checkTransparent judges a transparent flow to dst that names host: host
// must be allowed, and dst's IP must be one of host's addresses by the
// proxy's own resolution and allowed for host.
func (p *Proxy) checkTransparent(ctx context.Context, host string, dst netip.AddrPort) error {
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		// An IP literal in Host: it must be the destination and listed.
		if ip.Unmap() != dst.Addr() || !p.policy.Load().AllowIP(dst.Addr(), "") {
			return &errDenied{ip: dst.Addr(), reason: reasonIPNotListed}
		}
		return nil
	}
	ips, err := p.allowedAddrs(ctx, host)
	if err != nil {
		if d, ok := err.(*errDenied); ok && !d.ip.IsValid() {
			d.ip = dst.Addr()
		}
		return err
	}
	if !slices.Contains(ips, dst.Addr()) {
		return &errDenied{host: host, ip: dst.Addr(), reason: reasonMismatch}
	}
	return nil
}

// dialAny connects to the first of ips that answers on port.
func (p *Proxy) dialAny(ctx context.Context, ips []netip.Addr, port string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeouts.Dial)
	defer cancel()
	var last error
	for _, ip := range ips {
		c, err := p.opts.Dial(ctx, "tcp", net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}
