package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
)

// clientHello returns the first record a crypto/tls client sends for sni.
func clientHello(t testing.TB, sni string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	n, err := clientHelloLen(hdr)
	if err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, n)
	copy(rec, hdr)
	if _, err := io.ReadFull(b, rec[5:]); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestParseSNI(t *testing.T) {
	t.Parallel()
	for _, sni := range []string{"api.allowed.test", "x.y.z.example.com"} {
		rec := clientHello(t, sni)
		if got, err := parseSNI(rec); err != nil || got != sni {
			t.Fatalf("parseSNI = %q, %v; want %q", got, err, sni)
		}
		// Every truncation is refused, never misread.
		for i := range len(rec) {
			if got, err := parseSNI(rec[:i]); err == nil && got != "" {
				t.Fatalf("truncated to %d: parseSNI = %q", i, got)
			}
		}
	}
	// An IP literal target sends no SNI.
	if got, err := parseSNI(clientHello(t, "127.0.0.1")); err != nil || got != "" {
		t.Fatalf("no-SNI hello: %q, %v", got, err)
	}
}

func FuzzParseSNI(f *testing.F) {
	f.Add(clientHello(f, "api.allowed.test"))
	f.Add([]byte("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sni, err := parseSNI(b)
		if err == nil && len(sni) > len(b) {
			t.Fatalf("SNI longer than the input")
		}
	})
}

// FuzzServeConn feeds arbitrary bytes to one connection in proxy and in
// transparent mode: the proxy must neither panic nor hang, and it never dials
// (the fake dialer fails the test).
func FuzzServeConn(f *testing.F) {
	f.Add([]byte("CONNECT api.allowed.test:443 HTTP/1.1\r\n\r\n"), false)
	f.Add([]byte("GET http://api.allowed.test/ HTTP/1.1\r\nHost: x\r\n\r\n"), false)
	f.Add([]byte("GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n"), true)
	f.Add(clientHello(f, "api.allowed.test"), true)
	f.Add([]byte("\x00\xff"), true)
	pol, err := netpolicy.Compile(api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"*.allowed.test", "api.allowed.test"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, transparent bool) {
		opts := Options{
			Resolver: func(context.Context, string) ([]netip.Addr, error) {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil // refused: not listed
			},
			Dial: func(context.Context, string, string) (net.Conn, error) {
				t.Errorf("dialled for %q", data)
				return nil, errors.New("no dialling in the fuzz target")
			},
			Timeouts:       Timeouts{Header: 20 * time.Millisecond, Dial: 20 * time.Millisecond, Idle: 50 * time.Millisecond},
			MaxHeaderBytes: 4096,
		}
		if transparent {
			opts.OriginalDst = func(net.Conn) (netip.AddrPort, error) { return netip.MustParseAddrPort("127.0.0.1:443"), nil }
		}
		p := New(pol, opts)
		client, server := net.Pipe()
		defer client.Close()
		go io.Copy(io.Discard, client)
		go func() { client.Write(data) }()
		done := make(chan struct{})
		go func() { defer close(done); p.serveConn(t.Context(), server); server.Close() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("serveConn hangs on %q", data)
		}
	})
}
