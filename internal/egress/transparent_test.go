package egress

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func tlsBackend(t *testing.T) (*httptest.Server, netip.AddrPort) {
	t.Helper()
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls host=%s", r.Host)
	}))
	t.Cleanup(s.Close)
	return s, netip.MustParseAddrPort(s.Listener.Addr().String())
}

// tlsGet dials the proxy as if redirected, handshakes with sni and GETs /.
func tlsGet(t *testing.T, proxy, sni string) (string, error) {
	t.Helper()
	raw, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err := c.Handshake(); err != nil {
		return "", err
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestTransparentTLS(t *testing.T) {
	t.Parallel()
	_, dst := tlsBackend(t)
	tests := []struct {
		name    string
		entries []string
		names   map[string][]string
		sni     string
		reason  string // "" = allowed
	}{
		{"allowed SNI", []string{"api.allowed.test", "127.0.0.1/32"}, map[string][]string{"api.allowed.test": {"127.0.0.1"}}, "api.allowed.test", ""},
		{"wildcard SNI", []string{"*.allowed.test", "127.0.0.1/32"}, map[string][]string{"x.allowed.test": {"127.0.0.1"}}, "x.allowed.test", ""},
		{"SNI not allowed", []string{"api.allowed.test", "127.0.0.1/32"}, map[string][]string{"evil.test": {"127.0.0.1"}}, "evil.test", reasonHostNotAllowed},
		// The name is allowed and resolves (for the proxy) to 127.0.0.2, but
		// the packets went to 127.0.0.1: SNI/Host mismatch.
		{"SNI mismatch", []string{"api.allowed.test", "127.0.0.2/32"}, map[string][]string{"api.allowed.test": {"127.0.0.2"}}, "api.allowed.test", reasonMismatch},
		{"rebinding to loopback", []string{"api.allowed.test"}, map[string][]string{"api.allowed.test": {"127.0.0.1"}}, "api.allowed.test", reasonIPRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := startProxy(t, setup{entries: tt.entries, names: tt.names, origDst: dst})
			body, err := tlsGet(t, e.addr, tt.sni)
			if tt.reason == "" {
				if err != nil || body != "tls host="+tt.sni {
					t.Fatalf("GET = %q, %v; want the backend (denials %+v)", body, err, e.denials())
				}
				return
			}
			if err == nil {
				t.Fatalf("GET = %q, want the connection refused", body)
			}
			d := e.denials()
			if len(d) != 1 || d[0].Reason != tt.reason || d[0].Host != tt.sni {
				t.Fatalf("denials = %+v, want one for %q with reason %q", d, tt.sni, tt.reason)
			}
		})
	}
}

func TestTransparentHTTP(t *testing.T) {
	t.Parallel()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s", r.Host)
	}))
	t.Cleanup(backend.Close)
	dst := netip.MustParseAddrPort(backend.Listener.Addr().String())
	names := map[string][]string{"api.allowed.test": {"127.0.0.1"}, "evil.test": {"127.0.0.1"}, "other.allowed.test": {"127.0.0.3"}}
	e := startProxy(t, setup{entries: []string{"*.allowed.test", "127.0.0.1/32"}, names: names, origDst: dst})

	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	// Two requests on one connection: each Host is judged on its own.
	for i, tc := range []struct {
		host string
		want int
	}{{"api.allowed.test", 200}, {"evil.test", 403}} {
		fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: %s\r\n\r\n", i, tc.host)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.want {
			t.Fatalf("Host %s: %d %q, want %d", tc.host, resp.StatusCode, b, tc.want)
		}
	}
	if r := e.lastReason(t); r != reasonHostNotAllowed {
		t.Fatalf("denial reason %q", r)
	}
	// Allowed Host whose addresses do not include the destination.
	if got := rawStatus(t, e.addr, "GET / HTTP/1.1\r\nHost: other.allowed.test\r\n\r\n"); got != 403 {
		t.Fatalf("mismatched Host: status %d, want 403", got)
	}
}

func TestTransparentUnknownProtocol(t *testing.T) {
	t.Parallel()
	echo := netip.MustParseAddrPort(echoServer(t))
	tests := []struct {
		name    string
		entries []string
		data    string
		allowed bool
	}{
		{"unlisted IP, not TLS or HTTP", []string{"api.allowed.test"}, "\x00ssh?\n", false},
		{"listed IP, other protocol", []string{"127.0.0.1/32"}, "\x00ssh?\n", true},
		{"unlisted IP, TLS without SNI", []string{"api.allowed.test"}, "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := startProxy(t, setup{entries: tt.entries, origDst: echo})
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tt.data)
			got := make([]byte, len(tt.data))
			_, err = io.ReadFull(c, got)
			if tt.allowed != (err == nil && string(got) == tt.data) {
				t.Fatalf("echo = %q, %v; allowed %v (denials %+v)", got, err, tt.allowed, e.denials())
			}
			if !tt.allowed && e.lastReason(t) == "" {
				t.Fatal("no denial reported")
			}
		})
	}
}

func TestOriginalDstPlainConn(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Without a redirect there is either no conntrack entry (an error) or
	// the original destination is the local address itself.
	dst, err := OriginalDst(c)
	if err == nil && dst.String() != c.LocalAddr().String() {
		t.Fatalf("OriginalDst = %s, want %s or an error", dst, c.LocalAddr())
	}
	if _, err := OriginalDst(fakeConn{}); err == nil || !strings.Contains(err.Error(), "not a TCP") && !strings.Contains(err.Error(), "unsupported") {
		t.Fatalf("OriginalDst(non-TCP) = %v", err)
	}
}

type fakeConn struct{ net.Conn }

func TestTransparentServerFirstToListedIP(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "220 ready\n")
			c.Close()
		}
	}()
	dst := netip.MustParseAddrPort(ln.Addr().String())
	for _, tc := range []struct {
		entries []string
		want    string
	}{{[]string{"127.0.0.1/32"}, "220 ready\n"}, {[]string{"api.allowed.test"}, ""}} {
		e := startProxy(t, setup{entries: tc.entries, origDst: dst})
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, _ := io.ReadAll(c) // the client stays silent
		c.Close()
		if string(got) != tc.want {
			t.Fatalf("entries %q: got %q, want %q", tc.entries, got, tc.want)
		}
	}
}
