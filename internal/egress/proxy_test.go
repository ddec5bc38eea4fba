package egress

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
)

// env is a running proxy with a fake resolver and a dialer that refuses
// anything but loopback, so no test can send traffic elsewhere.
type env struct {
	addr  string
	proxy *Proxy
	mu    sync.Mutex
	deny  []Denial
}

func (e *env) denials() []Denial {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Denial(nil), e.deny...)
}

// lastReason waits briefly for a denial and returns its reason ("" if none).
func (e *env) lastReason(t *testing.T) string {
	t.Helper()
	for range 100 {
		if d := e.denials(); len(d) > 0 {
			return d[len(d)-1].Reason
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ""
}

type setup struct {
	entries []string
	names   map[string][]string
	origDst netip.AddrPort // when valid, every connection is transparent to it
	maxHdr  int
	idle    time.Duration
}

func startProxy(t *testing.T, s setup) *env {
	t.Helper()
	pol, err := netpolicy.Compile(api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: s.entries})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{}
	opts := Options{
		Resolver: func(_ context.Context, host string) ([]netip.Addr, error) {
			var out []netip.Addr
			for _, a := range s.names[strings.ToLower(host)] {
				out = append(out, netip.MustParseAddr(a))
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("lookup %s: no such host (fake resolver)", host)
			}
			return out, nil
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || !ap.Addr().IsLoopback() {
				t.Errorf("proxy dialled %q: tests must only reach loopback", addr)
				return nil, errors.New("test dialer: not loopback")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		OnDeny: func(d Denial) {
			e.mu.Lock()
			e.deny = append(e.deny, d)
			e.mu.Unlock()
		},
		Timeouts:       Timeouts{Header: 2 * time.Second, Dial: 2 * time.Second, Idle: cmp.Or(s.idle, 5*time.Second)},
		MaxHeaderBytes: s.maxHdr,
	}
	if s.origDst.IsValid() {
		opts.OriginalDst = func(net.Conn) (netip.AddrPort, error) { return s.origDst, nil }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	e.proxy = New(pol, opts)
	go func() { done <- e.proxy.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e.addr = ln.Addr().String()
	return e
}

// echoServer echoes every connection on loopback.
func echoServer(t *testing.T) string {
	t.Helper()
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
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// connect sends CONNECT target and returns the status and the connection.
func connect(t *testing.T, proxy, target string) (int, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return resp.StatusCode, c, br
}

func TestConnectTunnelsBothWays(t *testing.T) {
	t.Parallel()
	echo := echoServer(t)
	e := startProxy(t, setup{entries: []string{"api.allowed.test", "127.0.0.1/32"}, names: map[string][]string{"api.allowed.test": {"127.0.0.1"}}})
	code, c, br := connect(t, e.addr, "api.allowed.test:"+port(t, echo))
	if code != http.StatusOK {
		t.Fatalf("CONNECT status %d, want 200 (denials %+v)", code, e.denials())
	}
	for _, msg := range []string{"hello\n", strings.Repeat("x", 100000) + "\n"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo through tunnel: %d bytes, %v; want %d bytes", len(got), err, len(msg))
		}
	}
}

func TestConnectPolicy(t *testing.T) {
	t.Parallel()
	echo := echoServer(t)
	p := port(t, echo)
	names := map[string][]string{
		"api.allowed.test":    {"127.0.0.1"},
		"x.wild.test":         {"127.0.0.1"},
		"a.b.wild.test":       {"127.0.0.1"},
		"wild.test":           {"127.0.0.1"},
		"evil.test":           {"127.0.0.1"},
		"rebind.allowed.test": {"127.0.0.1"},
		"meta.allowed.test":   {"169.254.169.254"},
		"mixed.allowed.test":  {"169.254.169.254", "127.0.0.1"},
		"mapped.allowed.test": {"::ffff:169.254.169.254", "::ffff:10.0.0.1"},
	}
	tests := []struct {
		name    string
		entries []string
		target  string
		want    int
		reason  string
	}{
		{"allowed name", []string{"api.allowed.test", "127.0.0.1/32"}, "api.allowed.test:" + p, 200, ""},
		{"name case and dot", []string{"api.allowed.test", "127.0.0.1/32"}, "API.Allowed.Test.:" + p, 200, ""},
		{"denied domain", []string{"api.allowed.test", "127.0.0.1/32"}, "evil.test:" + p, 403, reasonHostNotAllowed},
		{"wildcard subdomain", []string{"*.wild.test", "127.0.0.1/32"}, "x.wild.test:" + p, 200, ""},
		{"wildcard deep subdomain", []string{"*.wild.test", "127.0.0.1/32"}, "a.b.wild.test:" + p, 200, ""},
		{"wildcard not apex", []string{"*.wild.test", "127.0.0.1/32"}, "wild.test:" + p, 403, reasonHostNotAllowed},
		{"IP literal unlisted", []string{"api.allowed.test"}, "127.0.0.1:" + p, 403, reasonIPNotListed},
		{"IP literal listed", []string{"127.0.0.1"}, "127.0.0.1:" + p, 200, ""},
		{"IPv6 literal unlisted", []string{"127.0.0.1/32"}, "[::1]:" + p, 403, reasonIPNotListed},
		{"metadata IP refused", []string{"0.0.0.0/0", "api.allowed.test"}, "169.254.169.254:80", 403, reasonIPNotListed},
		{"rebinding to loopback", []string{"rebind.allowed.test"}, "rebind.allowed.test:" + p, 403, reasonIPRefused},
		{"rebinding to metadata", []string{"meta.allowed.test", "0.0.0.0/0"}, "meta.allowed.test:80", 403, reasonIPRefused},
		{"refused addresses skipped", []string{"mixed.allowed.test", "127.0.0.1/32"}, "mixed.allowed.test:" + p, 200, ""},
		{"mapped loopback literal", []string{"api.allowed.test", "0.0.0.0/0"}, "[::ffff:127.0.0.1]:" + p, 403, reasonIPNotListed},
		{"rebinding to mapped private", []string{"mapped.allowed.test", "::/0"}, "mapped.allowed.test:80", 403, reasonIPRefused},
		{"mapped literal listed as IPv4", []string{"127.0.0.1/32"}, "[::ffff:127.0.0.1]:" + p, 200, ""},
		{"unresolvable", []string{"nx.allowed.test"}, "nx.allowed.test:443", 403, reasonResolve},
		{"no port", []string{"api.allowed.test"}, "api.allowed.test", 403, reasonBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := startProxy(t, setup{entries: tt.entries, names: names})
			code, c, br := connect(t, e.addr, tt.target)
			if code != tt.want {
				t.Fatalf("CONNECT %s: status %d, want %d (denials %+v)", tt.target, code, tt.want, e.denials())
			}
			if tt.want == 200 {
				io.WriteString(c, "ping\n")
				if got, err := br.ReadString('\n'); got != "ping\n" {
					t.Fatalf("tunnel echo = %q, %v", got, err)
				}
				if d := e.denials(); len(d) != 0 {
					t.Fatalf("denials on an allowed CONNECT: %+v", d)
				}
				return
			}
			d := e.denials()
			if len(d) != 1 || d[0].Reason != tt.reason || d[0].Client == "" || d[0].Time.IsZero() {
				t.Fatalf("denials = %+v, want one with reason %q", d, tt.reason)
			}
		})
	}
}

func TestForwardHTTP(t *testing.T) {
	t.Parallel()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s path=%s proxyhdr=%q", r.Host, r.URL.Path, r.Header.Get("Proxy-Authorization"))
	}))
	t.Cleanup(backend.Close)
	p := port(t, backend.Listener.Addr().String())
	e := startProxy(t, setup{entries: []string{"api.allowed.test", "127.0.0.1/32"}, names: map[string][]string{"api.allowed.test": {"127.0.0.1"}, "evil.test": {"127.0.0.1"}}})
	proxyURL, _ := url.Parse("http://" + e.addr)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 10 * time.Second}

	for i := range 3 { // several requests, reusing the client connection
		resp, err := client.Get(fmt.Sprintf("http://api.allowed.test:%s/p%d", p, i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("host=api.allowed.test:%s path=/p%d proxyhdr=\"\"", p, i)
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("GET through proxy: %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	// A POST with a body and Expect: 100-continue.
	req, _ := http.NewRequest(http.MethodPost, "http://api.allowed.test:"+p+"/post", strings.NewReader(strings.Repeat("b", 5000)))
	req.Header.Set("Expect", "100-continue")
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), ExpectContinueTimeout: 5 * time.Second}, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST through proxy: %d %s", resp.StatusCode, b)
	}
	resp, err = client.Get("http://evil.test:" + p + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), reasonHostNotAllowed) {
		t.Fatalf("denied GET: %d %q, want 403", resp.StatusCode, body)
	}
	if r := e.lastReason(t); r != reasonHostNotAllowed {
		t.Fatalf("denial reason %q", r)
	}
}

func TestNotAProxyRequest(t *testing.T) {
	t.Parallel()
	e := startProxy(t, setup{entries: []string{"api.allowed.test"}})
	for _, req := range []string{"GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n", "GET https://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n"} {
		if got := rawStatus(t, e.addr, req); got != 403 {
			t.Errorf("%q: status %d, want 403", req, got)
		}
	}
}

func rawStatus(t *testing.T, addr, req string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	return resp.StatusCode
}

func TestOversizedHeader(t *testing.T) {
	t.Parallel()
	e := startProxy(t, setup{entries: []string{"api.allowed.test"}, maxHdr: 1024})
	req := "GET http://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n"
	if got := rawStatus(t, e.addr, req); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", got)
	}
	if r := e.lastReason(t); r != reasonHeaderTooLarge {
		t.Fatalf("denial reason %q", r)
	}
}

func TestSurvivesGarbage(t *testing.T) {
	t.Parallel()
	echo := echoServer(t)
	e := startProxy(t, setup{entries: []string{"api.allowed.test", "127.0.0.1/32"}, names: map[string][]string{"api.allowed.test": {"127.0.0.1"}}})
	for _, junk := range []string{"\x00\x01\x02\xff", "\x16\x03\x01\xff\xff", "GET\r\n\r\n", "CONNECT\r\n\r\n", strings.Repeat("\r\n", 5000), "GET http://[::1 HTTP/1.1\r\n\r\n"} {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, junk)
		io.Copy(io.Discard, c)
		c.Close()
	}
	if code, _, _ := connect(t, e.addr, "api.allowed.test:"+port(t, echo)); code != 200 {
		t.Fatalf("after garbage: CONNECT status %d", code)
	}
}

func TestMaxConns(t *testing.T) {
	t.Parallel()
	pol, err := netpolicy.Compile(api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"api.allowed.test"}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- New(pol, Options{MaxConns: 1, Timeouts: Timeouts{Header: 10 * time.Second}}).Serve(ctx, ln)
	}()
	// The first connection holds the only slot (it sends nothing yet).
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	time.Sleep(100 * time.Millisecond)
	second, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := second.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("second connection over MaxConns: read %d, %v; want it closed", n, err)
	}
	// Cancelling Serve closes the held connection and returns nil.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("held connection after Serve returned: %v; want closed", err)
	}
}

func TestIdleTunnelClosed(t *testing.T) {
	t.Parallel()
	echo := echoServer(t)
	e := startProxy(t, setup{entries: []string{"api.allowed.test", "127.0.0.1/32"}, names: map[string][]string{"api.allowed.test": {"127.0.0.1"}}, idle: time.Second})
	code, c, br := connect(t, e.addr, "api.allowed.test:"+port(t, echo))
	if code != 200 {
		t.Fatalf("CONNECT status %d", code)
	}
	// Traffic keeps the tunnel open past the idle timeout...
	for range 4 {
		io.WriteString(c, "x\n")
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("active tunnel closed: %v", err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	// ...silence closes it: the proxy, not our read deadline, ends the read.
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("idle tunnel: %v; want closed by the proxy", err)
	}
}

// TestSetPolicyCutsOpenTunnels: a tunnel opened under a wider policy does
// not outlive it — narrowing the policy closes it, and a new CONNECT is
// judged by the new policy.
func TestSetPolicyCutsOpenTunnels(t *testing.T) {
	t.Parallel()
	echo := echoServer(t)
	names := map[string][]string{"a.test": {"127.0.0.1"}, "b.test": {"127.0.0.1"}}
	e := startProxy(t, setup{entries: []string{"a.test", "b.test", "127.0.0.1/32"}, names: names})
	code, c, br := connect(t, e.addr, "b.test:"+port(t, echo))
	if code != http.StatusOK {
		t.Fatalf("CONNECT b.test: %d", code)
	}
	io.WriteString(c, "before\n")
	if got, err := br.ReadString('\n'); err != nil || got != "before\n" {
		t.Fatalf("echo before: %q %v", got, err)
	}
	narrow, err := netpolicy.Compile(api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"a.test", "127.0.0.1/32"}})
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.SetPolicy(narrow)
	io.WriteString(c, "after\n")
	if got, err := br.ReadString('\n'); err == nil {
		t.Fatalf("the old tunnel still carries data after the policy narrowed: %q", got)
	}
	if code, _, _ := connect(t, e.addr, "b.test:"+port(t, echo)); code != http.StatusForbidden {
		t.Errorf("new CONNECT b.test after narrowing: %d, want 403", code)
	}
	if code, _, _ := connect(t, e.addr, "a.test:"+port(t, echo)); code != http.StatusOK {
		t.Errorf("new CONNECT a.test after narrowing: %d, want 200", code)
	}
}
