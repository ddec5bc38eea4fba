package netpolicy

import (
	"net"
	"net/netip"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// CheckEntry reports whether s is a valid whitelist entry: an IP address, a
// CIDR (without host bits), a domain or a "*.domain" wildcard. Errors wrap
// api.ErrInvalid and say what to write instead.
func CheckEntry(s string) error {
	bad := func(format string, args ...any) error { return api.Errorf(api.ErrInvalid, format, args...) }
	switch {
	case s == "":
		return bad("empty entry")
	case strings.TrimSpace(s) != s:
		return bad("surrounding spaces")
	case s == "*" || s == "*.":
		return bad("a bare wildcard; use the allow policy to allow everything")
	case strings.Contains(s, "://"):
		return bad("want a host name, IP or CIDR, not a URL")
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return bad("not a valid CIDR")
		}
		if m := p.Masked(); m != p {
			return bad("host bits are set; did you mean %s?", m)
		}
		return nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return bad("IPv6 zones are not supported")
		}
		return nil
	}
	if strings.Contains(s, ":") {
		if _, _, err := net.SplitHostPort(s); err == nil {
			return bad("ports are not supported; list the host only")
		}
		return bad("not a valid IP address")
	}
	d := strings.TrimSuffix(strings.TrimPrefix(s, "*."), ".")
	if strings.Contains(d, "*") {
		return bad(`a wildcard is only allowed as a leading "*."`)
	}
	if len(d) > 253 {
		return bad("longer than 253 characters")
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if err := checkLabel(l); err != nil {
			return err
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return bad("not a valid IP address or domain (the last label is numeric)")
	}
	return nil
}

func checkLabel(l string) error {
	if l == "" || len(l) > 63 {
		return api.Errorf(api.ErrInvalid, "domain label %q: want 1 to 63 characters", l)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return api.Errorf(api.ErrInvalid, "domain label %q: must not start or end with '-'", l)
	}
	for _, c := range l {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return api.Errorf(api.ErrInvalid, "domain label %q: only letters, digits and '-' are allowed", l)
		}
	}
	return nil
}
