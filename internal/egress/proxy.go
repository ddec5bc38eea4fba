// Package egress is the filtering egress proxy that enforces a whitelist
// network policy (netpolicy.Policy). It speaks HTTP forward proxy
// (absolute-form requests) and HTTP CONNECT, and accepts transparently
// redirected TCP flows, whose destination it learns from Options.OriginalDst
// and whose name it takes from the TLS SNI or the HTTP Host header.
//
// The proxy resolves names itself (Options.Resolver) and dials only IP
// addresses the policy allows, so a client cannot smuggle a name past it, a
// whitelisted name that resolves to a private address is refused (DNS
// rebinding), and a transparent flow whose SNI/Host names an allowed host
// while its packets go elsewhere is refused (SNI/Host mismatch).
//
// Decisions:
//   - CONNECT and forward: an IP-literal target needs an IP/CIDR entry; a
//     name must pass AllowHost and is dialled only at the resolved addresses
//     AllowIP accepts (others are skipped; none left is a denial). A denial
//     answers 403 with the reason; an unreachable upstream answers 502.
//   - Transparent TLS: the SNI must be allowed and the original destination
//     one of its addresses by our resolution; otherwise the flow is closed.
//     Transparent HTTP: the same for the Host of every request.
//   - A transparent flow with no name (TLS without SNI, another protocol, or
//     a client that waits for the server to speak) passes only to an IP
//     listed by an IP/CIDR entry; a name always wins over the IP, so an
//     unlisted SNI/Host to a listed IP is refused.
//   - Forwarded requests use one upstream connection each; hop-by-hop and
//     Proxy-* headers are dropped. Only the first ClientHello record is
//     read; a hello split across records is refused.
//
// Wiring (done by the backends, not here): run one Proxy per sandbox (or
// one per host with a policy per source address) on a host-side address the
// sandbox can reach, e.g. the host end of the sandbox's veth pair. In the
// sandbox's network namespace: route only to that veth; set HTTP_PROXY,
// HTTPS_PROXY (and lower-case forms) to the proxy; and redirect every other
// TCP flow to it, e.g. in the host namespace
//
//	iptables -t nat -A PREROUTING -i <veth> -p tcp ! -d <proxy-ip> -j DNAT --to-destination <proxy-ip>:<port>
//	ip6tables … the same for IPv6
//
// (or REDIRECT inside the namespace) and pass OriginalDst as
// Options.OriginalDst, which reads the pre-NAT destination from conntrack.
// Drop everything else leaving the veth (UDP included, so QUIC falls back
// to TCP); answer DNS inside the sandbox with a resolver that only returns
// names the policy allows, or none: the proxy resolves names itself and
// never trusts the sandbox's answer. Report Denial values to the audit log
// and the caller.
package egress

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
)

// Denial describes one refused connection or request, for the audit log and
// the caller.
type Denial struct {
	Time   time.Time
	Client string     // the client's address
	Host   string     // the name asked for ("" for an IP literal)
	IP     netip.Addr // the address refused, when one was known
	Reason string
}

// Timeouts bound each phase of a connection. Zero values take the defaults.
type Timeouts struct {
	// Header bounds reading a request header or a ClientHello (default 10s).
	Header time.Duration
	// Dial bounds resolving and connecting upstream (default 10s).
	Dial time.Duration
	// Idle closes a tunnel or connection with no traffic either way (default 5m).
	Idle time.Duration
}

// Options configure a Proxy. Every field is optional.
type Options struct {
	// Resolver resolves a name to addresses; default net.DefaultResolver.
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects upstream; it is only ever given an IP:port. Default net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OriginalDst returns the pre-redirect destination of a transparently
	// redirected connection (OriginalDst in this package on Linux). When nil,
	// when it fails, or when it returns the listener's own address, the
	// connection is treated as a proxy client (CONNECT or forward).
	OriginalDst func(net.Conn) (netip.AddrPort, error)
	// OnDeny is called (synchronously, so keep it quick) for every denial.
	OnDeny func(Denial)
	// Logger receives debug and error logs; default discards.
	Logger   *slog.Logger
	Timeouts Timeouts
	// MaxHeaderBytes bounds a request header or ClientHello (default 32 KiB).
	MaxHeaderBytes int
	// MaxConns bounds concurrent client connections (default 1024); more
	// are closed at once.
	MaxConns int
}

// Proxy is the filtering egress proxy. Create it with New.
type Proxy struct {
	policy atomic.Pointer[netpolicy.Policy]
	// open holds the connections being served, so SetPolicy can cut them.
	openMu sync.Mutex
	open   map[*activity]struct{}
	opts   Options
	log    *slog.Logger
	sem    chan struct{}
}

// New returns a proxy enforcing policy, which must not be nil. Options are
// copied; zero fields take their defaults.
func New(policy *netpolicy.Policy, opts Options) *Proxy {
	if opts.Resolver == nil {
		opts.Resolver = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{}).DialContext
	}
	t := &opts.Timeouts
	if t.Header <= 0 {
		t.Header = 10 * time.Second
	}
	if t.Dial <= 0 {
		t.Dial = 10 * time.Second
	}
	if t.Idle <= 0 {
		t.Idle = 5 * time.Minute
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 32 << 10
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{opts: opts, log: log, sem: make(chan struct{}, opts.MaxConns), open: map[*activity]struct{}{}}
	p.policy.Store(policy)
	return p
}

// SetPolicy replaces the policy and closes every open connection: a tunnel
// or connection judged under the old policy must not outlive it (a client
// reconnects and is judged again).
func (p *Proxy) SetPolicy(policy *netpolicy.Policy) {
	p.policy.Store(policy)
	p.openMu.Lock()
	defer p.openMu.Unlock()
	for a := range p.open {
		a.closeAll()
	}
}

// Serve accepts connections on ln until ctx is done or ln fails. When ctx
// is done it closes ln and every open connection, waits for their handlers
// and returns nil; otherwise it returns the Accept error.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	// Deferred in this order so cancel (closing every connection) runs
	// before the wait for their handlers.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				p.log.Warn("egress: accept failed, retrying", "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		select {
		case p.sem <- struct{}{}:
		default:
			p.log.Warn("egress: too many connections, closing one", "client", c.RemoteAddr().String(), "max_conns", p.opts.MaxConns)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-p.sem }()
			defer c.Close()
			stopConn := context.AfterFunc(ctx, func() { c.Close() })
			defer stopConn()
			p.serveConn(ctx, c)
		}()
	}
}

// conn is one client connection with its bounded reader.
type conn struct {
	net.Conn
	limit *io.LimitedReader // bounds the header phase; lifted once a header is read
	br    *bufio.Reader
	act   *activity
}

func (p *Proxy) newConn(c net.Conn) *conn {
	act := &activity{}
	act.touch()
	ac := act.add(c)
	lr := &io.LimitedReader{R: ac, N: int64(p.opts.MaxHeaderBytes)}
	return &conn{Conn: ac, limit: lr, br: bufio.NewReaderSize(lr, max(p.opts.MaxHeaderBytes, maxTLSRecord)+16), act: act}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// unlimit lifts the header bound once a header has been read.
func (c *conn) unlimit() { c.limit.N = 1 << 62 }

// resetLimit bounds the next header.
func (c *conn) resetLimit(n int) { c.limit.N = int64(n) + int64(c.br.Buffered()) }

func (p *Proxy) serveConn(ctx context.Context, c net.Conn) {
	cc := p.newConn(c)
	defer cc.act.closeAll()
	p.openMu.Lock()
	p.open[cc.act] = struct{}{}
	p.openMu.Unlock()
	defer func() {
		p.openMu.Lock()
		delete(p.open, cc.act)
		p.openMu.Unlock()
	}()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go cc.act.watch(wctx, p.opts.Timeouts.Idle)
	if p.opts.OriginalDst != nil {
		dst, err := p.opts.OriginalDst(c)
		local, _ := netip.ParseAddrPort(c.LocalAddr().String())
		if err == nil && dst.IsValid() && (dst.Addr().Unmap() != local.Addr().Unmap() || dst.Port() != local.Port()) {
			p.serveTransparent(ctx, cc, netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()))
			return
		}
	}
	p.serveProxy(ctx, cc)
}

// deny reports a denial to OnDeny and the log.
func (p *Proxy) deny(c net.Conn, host string, ip netip.Addr, reason string) {
	d := Denial{Time: time.Now(), Client: c.RemoteAddr().String(), Host: host, IP: ip, Reason: reason}
	p.log.Info("egress: denied", "client", d.Client, "host", host, "ip", ip.String(), "reason", reason)
	if p.opts.OnDeny != nil {
		p.opts.OnDeny(d)
	}
}
