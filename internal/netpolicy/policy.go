// Package netpolicy is the network policy model: it validates and compiles an
// api.NetworkPolicy into a Policy that answers "may this host / this IP be
// reached?". It is pure data — no sockets, no DNS — so the egress proxy and
// the backends that wire it in share one set of rules.
//
// Matching rules:
//   - "example.com" matches that name only, case-insensitively, with or
//     without a trailing dot.
//   - "*.example.com" matches every subdomain ("a.example.com",
//     "a.b.example.com") but not the apex "example.com"; list both to allow both.
//   - "1.2.3.4", "2001:db8::1" match that address; "10.0.0.0/8",
//     "2001:db8::/32" match the prefix. IPv4-mapped IPv6 addresses
//     (::ffff:a.b.c.d) are matched as their IPv4 form.
//
// Special addresses (private, loopback, link-local including the cloud
// metadata address 169.254.169.254, unspecified, multicast, CGNAT, reserved)
// are refused unless an IP/CIDR entry lists them explicitly; a domain entry
// never unlocks them, so a whitelisted name that resolves to 127.0.0.1 (DNS
// rebinding) is refused.
package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Policy is a compiled network policy. It is immutable and safe for
// concurrent use.
type Policy struct {
	mode     string
	exact    map[string]bool
	suffixes []string // ".example.com" for "*.example.com"
	prefixes []netip.Prefix
}

// Compile validates p and compiles it. Errors wrap api.ErrInvalid and name
// the offending entry.
func Compile(p api.NetworkPolicy) (*Policy, error) {
	var errs []error
	switch p.Policy {
	case api.NetworkAllow, api.NetworkDeny:
		if len(p.Whitelist) > 0 {
			errs = append(errs, api.Errorf(api.ErrInvalid, "network whitelist entries only apply to the whitelist policy (policy is %q)", p.Policy))
		}
	case api.NetworkWhitelist:
		if len(p.Whitelist) == 0 {
			errs = append(errs, api.Errorf(api.ErrInvalid, "whitelist policy needs at least one entry"))
		}
	default:
		errs = append(errs, api.Errorf(api.ErrInvalid, "network policy %q is not one of allow, deny, whitelist", p.Policy))
	}
	pol := &Policy{mode: p.Policy, exact: map[string]bool{}}
	for i, e := range p.Whitelist {
		if err := CheckEntry(e); err != nil {
			errs = append(errs, fmt.Errorf("network whitelist[%d] %q: %w", i, e, err))
			continue
		}
		switch {
		case strings.Contains(e, "/"):
			pf := netip.MustParsePrefix(e)
			if pf.Addr().Is4In6() && pf.Bits() >= 96 {
				pf = netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-96)
			}
			pol.prefixes = append(pol.prefixes, pf)
		case isAddr(e):
			a := netip.MustParseAddr(e).Unmap()
			pol.prefixes = append(pol.prefixes, netip.PrefixFrom(a, a.BitLen()))
		case strings.HasPrefix(e, "*."):
			pol.suffixes = append(pol.suffixes, "."+normalize(e[2:]))
		default:
			pol.exact[normalize(e)] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return pol, nil
}

func isAddr(s string) bool { _, err := netip.ParseAddr(s); return err == nil }

func normalize(host string) string { return strings.ToLower(strings.TrimSuffix(host, ".")) }

// Mode is the policy's kind: api.NetworkAllow, api.NetworkDeny or api.NetworkWhitelist.
func (p *Policy) Mode() string { return p.mode }

// AllowHost reports whether the name host may be contacted. An IP literal is
// judged by AllowIP with no name. Under allow every name is allowed (the IPs
// it resolves to are still checked by AllowIP); under deny none is.
func (p *Policy) AllowHost(host string) bool {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return p.AllowIP(a, "")
	}
	switch p.mode {
	case api.NetworkAllow:
		return true
	case api.NetworkWhitelist:
	default:
		return false
	}
	h := normalize(host)
	if h == "" || p.exact[h] {
		return h != ""
	}
	for _, s := range p.suffixes {
		if len(h) > len(s) && strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}

// AllowIP reports whether ip may be contacted, reached through the name
// viaName ("" for an IP literal).
//
// A special address (see Special) is allowed only if an IP/CIDR entry
// contains it and is no broader than the special range it falls in, so
// "127.0.0.1/32" or "10.0.0.0/8" unlock those addresses but "0.0.0.0/0" does
// not unlock loopback. Any other address is allowed if an IP/CIDR entry
// contains it or viaName passes AllowHost. Under allow every non-special
// address is allowed; under deny nothing is.
func (p *Policy) AllowIP(ip netip.Addr, viaName string) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	if p.mode == api.NetworkDeny || p.mode != api.NetworkAllow && p.mode != api.NetworkWhitelist {
		return false
	}
	if r, special := specialRange(ip); special {
		return slices.ContainsFunc(p.prefixes, func(pf netip.Prefix) bool {
			return pf.Contains(ip) && pf.Bits() >= r.Bits()
		})
	}
	if p.mode == api.NetworkAllow {
		return true
	}
	if slices.ContainsFunc(p.prefixes, func(pf netip.Prefix) bool { return pf.Contains(ip) }) {
		return true
	}
	if viaName == "" {
		return false
	}
	if _, err := netip.ParseAddr(viaName); err == nil {
		return false // an IP literal is not a name
	}
	return p.AllowHost(viaName)
}

// ListsIP reports whether an IP/CIDR entry allows ip on its own, without a
// name (what an IP-literal destination needs).
func (p *Policy) ListsIP(ip netip.Addr) bool { return p.AllowIP(ip, "") }

// Special reports whether ip is in a range refused unless listed explicitly:
// private (RFC 1918, ULA), loopback, link-local (with the metadata address),
// unspecified, multicast, CGNAT (100.64.0.0/10), reserved and broadcast, and
// the IPv4-mapped and IPv4-compatible forms of these.
func Special(ip netip.Addr) bool { _, ok := specialRange(ip.Unmap().WithZone("")); return ok }

var specialRanges = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",      // "this network", unspecified
		"10.0.0.0/8",     // RFC 1918
		"100.64.0.0/10",  // CGNAT
		"127.0.0.0/8",    // loopback
		"169.254.0.0/16", // link-local, cloud metadata 169.254.169.254
		"172.16.0.0/12",  // RFC 1918
		"192.0.0.0/24",   // IETF protocol assignments
		"192.168.0.0/16", // RFC 1918
		"198.18.0.0/15",  // benchmarking
		"224.0.0.0/4",    // multicast
		"240.0.0.0/4",    // reserved, broadcast
		"::/96",          // unspecified, loopback, IPv4-compatible
		"64:ff9b:1::/48", // local-use NAT64
		"fc00::/7",       // unique local (ULA)
		"fe80::/10",      // link-local
		"fec0::/10",      // deprecated site-local
		"ff00::/8",       // multicast
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// specialRange returns the special range holding ip (already unmapped).
func specialRange(ip netip.Addr) (netip.Prefix, bool) {
	for _, r := range specialRanges {
		if r.Contains(ip) {
			return r, true
		}
	}
	// NAT64 (64:ff9b::/96) embeds an IPv4 address: judge that address.
	if nat64.Contains(ip) {
		b := ip.As16()
		if r, ok := specialRange(netip.AddrFrom4([4]byte(b[12:]))); ok {
			return r, true
		}
	}
	return netip.Prefix{}, false
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// SpecialPrefixes returns the special ranges (see Special) as prefixes, for
// packet filters that enforce the same rule below the proxy.
func SpecialPrefixes() []netip.Prefix { return slices.Clone(specialRanges) }
