package netpolicy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func mustCompile(t testing.TB, mode string, entries ...string) *Policy {
	t.Helper()
	p, err := Compile(api.NetworkPolicy{Policy: mode, Whitelist: entries})
	if err != nil {
		t.Fatalf("Compile(%s, %q): %v", mode, entries, err)
	}
	return p
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   api.NetworkPolicy
		msg  string
	}{
		{"unknown policy", api.NetworkPolicy{Policy: "maybe"}, "not one of"},
		{"empty policy", api.NetworkPolicy{}, "not one of"},
		{"empty whitelist", api.NetworkPolicy{Policy: api.NetworkWhitelist}, "at least one entry"},
		{"entries under allow", api.NetworkPolicy{Policy: api.NetworkAllow, Whitelist: []string{"a.com"}}, "only apply"},
		{"bad entry", api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"a.com", "http://b"}}, `whitelist[1] "http://b"`},
		{"host bits", api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"10.0.0.1/8"}}, "did you mean 10.0.0.0/8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Compile(tt.in)
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Compile(%+v) = %v, want ErrInvalid containing %q", tt.in, err, tt.msg)
			}
		})
	}
}

func TestAllowHost(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, api.NetworkWhitelist, "pypi.org", "*.Example.COM", "files.test.", "1.2.3.4", "10.0.0.0/8")
	tests := []struct {
		host string
		want bool
	}{
		{"pypi.org", true},
		{"PyPI.org.", true},
		{"www.pypi.org", false},
		{"pypi.org.evil.com", false},
		{"evilpypi.org", false},
		{"a.example.com", true},
		{"a.b.EXAMPLE.com", true},
		{"example.com", false}, // the wildcard does not cover the apex
		{"xexample.com", false},
		{".example.com", false},
		{"files.test", true},
		{"", false},
		{"1.2.3.4", true},
		{"[1.2.3.4]", true},
		{"1.2.3.5", false},
		{"10.1.2.3", true},
		{"127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			t.Parallel()
			if got := p.AllowHost(tt.host); got != tt.want {
				t.Fatalf("AllowHost(%q) = %v, want %v", tt.host, got, tt.want)
			}
		})
	}
}

func TestAllowIP(t *testing.T) {
	t.Parallel()
	white := []string{"pypi.org", "*.allowed.test", "203.0.113.7", "198.51.100.0/24", "2001:db8::/32", "127.0.0.1/32", "0.0.0.0/0"}
	tests := []struct {
		name, mode string
		entries    []string
		ip, via    string
		want       bool
	}{
		{"public via listed name", api.NetworkWhitelist, white, "93.184.216.34", "pypi.org", true},
		{"public via unlisted name", api.NetworkWhitelist, []string{"pypi.org"}, "93.184.216.34", "evil.com", false},
		{"public literal unlisted", api.NetworkWhitelist, []string{"pypi.org"}, "93.184.216.34", "", false},
		{"literal as via name", api.NetworkWhitelist, []string{"pypi.org"}, "93.184.216.34", "93.184.216.34", false},
		{"listed IP", api.NetworkWhitelist, white, "203.0.113.7", "", true},
		{"listed CIDR", api.NetworkWhitelist, white, "198.51.100.200", "", true},
		{"listed v6 CIDR", api.NetworkWhitelist, white, "2001:db8::42", "", true},
		{"mapped listed IP", api.NetworkWhitelist, white, "::ffff:203.0.113.7", "", true},
		{"rebinding loopback", api.NetworkWhitelist, []string{"pypi.org"}, "127.0.0.1", "pypi.org", false},
		{"rebinding metadata", api.NetworkWhitelist, []string{"pypi.org"}, "169.254.169.254", "pypi.org", false},
		{"rebinding private", api.NetworkWhitelist, []string{"*.allowed.test"}, "10.0.0.5", "a.allowed.test", false},
		{"rebinding mapped loopback", api.NetworkWhitelist, []string{"pypi.org"}, "::ffff:127.0.0.1", "pypi.org", false},
		{"rebinding v6 loopback", api.NetworkWhitelist, []string{"pypi.org"}, "::1", "pypi.org", false},
		{"rebinding ULA", api.NetworkWhitelist, []string{"pypi.org"}, "fd00::1", "pypi.org", false},
		{"rebinding v6 link-local", api.NetworkWhitelist, []string{"pypi.org"}, "fe80::1", "pypi.org", false},
		{"rebinding CGNAT", api.NetworkWhitelist, []string{"pypi.org"}, "100.64.1.1", "pypi.org", false},
		{"rebinding unspecified", api.NetworkWhitelist, []string{"pypi.org"}, "0.0.0.0", "pypi.org", false},
		{"rebinding multicast", api.NetworkWhitelist, []string{"pypi.org"}, "224.0.0.1", "pypi.org", false},
		{"rebinding NAT64 of private", api.NetworkWhitelist, []string{"pypi.org"}, "64:ff9b::a00:1", "pypi.org", false},
		{"NAT64 of public", api.NetworkWhitelist, []string{"pypi.org"}, "64:ff9b::5db8:d822", "pypi.org", true},
		{"listed loopback", api.NetworkWhitelist, white, "127.0.0.1", "", true},
		{"listed loopback, other", api.NetworkWhitelist, white, "127.0.0.2", "", false},
		{"mapped listed loopback", api.NetworkWhitelist, white, "::ffff:127.0.0.1", "", true},
		{"0/0 does not unlock metadata", api.NetworkWhitelist, white, "169.254.169.254", "", false},
		{"0/0 does not unlock private", api.NetworkWhitelist, white, "192.168.1.1", "", false},
		{"listed metadata", api.NetworkWhitelist, []string{"169.254.169.254"}, "169.254.169.254", "", true},
		{"listed private /8", api.NetworkWhitelist, []string{"10.0.0.0/8"}, "10.9.9.9", "", true},
		{"mapped CIDR entry", api.NetworkWhitelist, []string{"::ffff:10.0.0.0/104"}, "10.9.9.9", "", true},
		{"allow public", api.NetworkAllow, nil, "93.184.216.34", "", true},
		{"allow refuses metadata", api.NetworkAllow, nil, "169.254.169.254", "", false},
		{"deny", api.NetworkDeny, nil, "93.184.216.34", "pypi.org", false},
		{"zone ignored", api.NetworkWhitelist, []string{"fe80::1"}, "fe80::1%eth0", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := mustCompile(t, tt.mode, tt.entries...)
			if got := p.AllowIP(netip.MustParseAddr(tt.ip), tt.via); got != tt.want {
				t.Fatalf("AllowIP(%s, %q) under %s %q = %v, want %v", tt.ip, tt.via, tt.mode, tt.entries, got, tt.want)
			}
		})
	}
	if (&Policy{mode: api.NetworkAllow}).AllowIP(netip.Addr{}, "") {
		t.Fatal("AllowIP(invalid) = true")
	}
}

func TestModeHosts(t *testing.T) {
	t.Parallel()
	if !mustCompile(t, api.NetworkAllow).AllowHost("anything.com") {
		t.Error("allow refuses a name")
	}
	if mustCompile(t, api.NetworkDeny).AllowHost("anything.com") {
		t.Error("deny allows a name")
	}
}

// FuzzPolicy checks that Compile never panics, that everything it accepts
// passes CheckEntry, and that no entry makes a domain unlock a special IP.
func FuzzPolicy(f *testing.F) {
	for _, s := range []string{"pypi.org", "*.a.test", "10.0.0.0/8", "::1", "0.0.0.0/0", "::ffff:127.0.0.1", "A.B."} {
		f.Add(s, "a.test", "127.0.0.1")
	}
	f.Fuzz(func(t *testing.T, entry, host, ip string) {
		p, err := Compile(api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{entry}})
		if err != nil {
			return
		}
		if CheckEntry(entry) != nil {
			t.Fatalf("Compile accepted %q but CheckEntry refuses it", entry)
		}
		p.AllowHost(host)
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return
		}
		if Special(a) && p.AllowIP(a, host) && !p.AllowIP(a, "") {
			t.Fatalf("entry %q: name %q unlocks special %s", entry, host, a)
		}
	})
}
