package sandboxnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/egress"
	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
)

// Net is one sandbox's network. Its methods are safe for concurrent use.
type Net struct {
	m     *Manager
	key   string
	ns    string // network namespace name
	table string
	veth  string     // the host end
	peer  string     // the sandbox end's name until Join renames it eth0
	host  netip.Addr // host end of the veth: DNS server and egress proxy
	sbx   netip.Addr // the sandbox's address

	mu     sync.Mutex // serialises policy changes and Close
	policy atomic.Pointer[netpolicy.Policy]
	mode   string
	closed bool

	proxy    *egress.Proxy
	group    uint16 // the nfnetlink_log group its rules log to (0: none)
	plog     atomic.Pointer[packetLog]
	resolver *cache
	onDeny   atomic.Pointer[func(api.NetworkDenial)]
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// user is set for the network of a rootless runtime's sandbox (see
	// rootless.go): no veth, host or sandbox addresses on loopback and
	// slirp4netns's network.
	user *userNet
}

// NetnsPath is the path of the sandbox's network namespace, for the runtime
// spec's network namespace.
func (n *Net) NetnsPath() string { return filepath.Join("/run/netns", n.ns) }

// HostAddr is the host end's address: the sandbox's nameserver and, under
// whitelist, its HTTP proxy (ProxyURL).
func (n *Net) HostAddr() netip.Addr { return n.host }

// SandboxAddr is the sandbox's own address.
func (n *Net) SandboxAddr() netip.Addr { return n.sbx }

// ProxyURL is the egress proxy, for HTTP_PROXY and HTTPS_PROXY.
func (n *Net) ProxyURL() string {
	return "http://" + netip.AddrPortFrom(n.host, ProxyPort).String()
}

// ResolvConf is the sandbox's /etc/resolv.conf.
func (n *Net) ResolvConf() string {
	return "# ds-sandbox: the host answers, under the sandbox's network policy\nnameserver " + n.host.String() + "\noptions edns0\n"
}

// State is what Recover (RecoverRootless for a rootless network) needs to
// find the network again.
func (n *Net) State() map[string]string {
	if n.user != nil {
		n.user.mu.Lock()
		defer n.user.mu.Unlock()
		return map[string]string{"net_key": n.key, "net_mode": "rootless", "net_slirp": strconv.Itoa(n.user.slirpPid)}
	}
	return map[string]string{"net_key": n.key, "net_addr": n.sbx.String()}
}

// Mode is the policy in force.
func (n *Net) Mode() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mode
}

// OnDenial sets the function told of every denial (nil: none). It is
// called synchronously from the proxy and DNS server: keep it quick.
func (n *Net) OnDenial(fn func(api.NetworkDenial)) {
	if fn == nil {
		n.onDeny.Store(nil)
		return
	}
	n.onDeny.Store(&fn)
}

// FlushDenials reports, before it returns, every refused packet the rules
// have logged so far: what a program already saw refused is among the
// denials of the execution that ran it.
func (n *Net) FlushDenials() {
	if pl := n.plog.Load(); pl != nil {
		pl.flush()
	}
}

func (n *Net) deny(d api.NetworkDenial) {
	if fn := n.onDeny.Load(); fn != nil {
		(*fn)(d)
	}
}

// Create makes the network of a new sandbox under policy pol (allow or
// whitelist): the veth, the rules, the DNS server and the proxy; Join then
// gives the sandbox its end. key identifies it (see KeyFor); on error
// nothing is left.
func (m *Manager) Create(ctx context.Context, key string, pol api.NetworkPolicy) (*Net, error) {
	if err := supported(); err != nil {
		return nil, err
	}
	if !keyRe.MatchString(key) {
		return nil, api.Errorf(api.ErrInvalid, "sandboxnet: bad key %q", key)
	}
	if pol.Policy != api.NetworkAllow && pol.Policy != api.NetworkWhitelist {
		return nil, api.Errorf(api.ErrInvalid, "sandboxnet: a sandbox network is made for allow or whitelist, not %q", pol.Policy)
	}
	compiled, err := netpolicy.Compile(pol)
	if err != nil {
		return nil, err
	}
	n := m.newNet(key)
	unlock, err := lockFile("/run/ds-sandbox/net.lock")
	if err != nil {
		return nil, fmt.Errorf("sandboxnet: %w", err)
	}
	m.mu.Lock()
	err = func() error {
		defer unlock()
		defer m.mu.Unlock()
		host, sbx, err := m.allocate()
		if err != nil {
			return err
		}
		n.host, n.sbx = host, sbx
		return n.plumb(ctx)
	}()
	if err != nil {
		n.teardown(context.Background())
		return nil, fmt.Errorf("sandboxnet: %w", err)
	}
	if err := n.start(ctx, compiled); err != nil {
		n.Close(context.Background())
		return nil, fmt.Errorf("sandboxnet: %w", err)
	}
	return n, nil
}

// Recover finds the network of a running sandbox from its State after a
// daemon restart: the namespace, veth and rules outlived the daemon; the DNS
// server and proxy are started again under pol. An error wrapping
// api.ErrNotFound means the network is gone.
func (m *Manager) Recover(ctx context.Context, state map[string]string, pol api.NetworkPolicy) (*Net, error) {
	if err := supported(); err != nil {
		return nil, err
	}
	key := state["net_key"]
	sbx, err := netip.ParseAddr(state["net_addr"])
	if !keyRe.MatchString(key) || err != nil || !sbx.Is4() || !m.cfg.Pool.Contains(sbx) {
		return nil, api.Errorf(api.ErrInvalid, "sandboxnet: unusable recovery state %v", state)
	}
	compiled, err := netpolicy.Compile(pol)
	if err != nil {
		return nil, err
	}
	n := m.newNet(key)
	n.sbx = sbx
	n.host = sbx.Prev()
	if _, err := os.Stat(n.NetnsPath()); err != nil {
		n.teardown(ctx)
		return nil, api.Errorf(api.ErrNotFound, "sandboxnet: network namespace %s is gone", n.ns)
	}
	if _, err := net.InterfaceByName(n.veth); err != nil {
		n.teardown(ctx)
		return nil, api.Errorf(api.ErrNotFound, "sandboxnet: veth %s is gone", n.veth)
	}
	if err := n.start(ctx, compiled); err != nil {
		// The caller stops the sandbox: nothing of its network may stay
		// for the next daemon start to reap.
		n.stop()
		if terr := n.teardown(context.WithoutCancel(ctx)); terr != nil {
			err = errors.Join(err, fmt.Errorf("remove the network: %w", terr))
		}
		return nil, fmt.Errorf("sandboxnet: %w", err)
	}
	return n, nil
}

func (m *Manager) newNet(key string) *Net {
	return &Net{
		m: m, key: key, ns: m.netnsName(key), table: m.tableName(key), veth: m.vethName(key), peer: m.peerName(key),
		resolver: newCache(m.cfg.Resolver),
	}
}

// allocate picks a free /30 of the pool: one no interface of the host has
// an address in. Callers hold the host-wide lock until the veth has its
// address.
func (m *Manager) allocate() (host, sbx netip.Addr, err error) {
	used := map[netip.Addr]bool{}
	ifs, err := net.Interfaces()
	if err != nil {
		return host, sbx, err
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if pf, err := netip.ParsePrefix(a.String()); err == nil && m.cfg.Pool.Contains(pf.Addr()) {
				used[slot(pf.Addr())] = true
			}
		}
	}
	for a := m.cfg.Pool.Addr(); m.cfg.Pool.Contains(a); a = a.Next().Next().Next().Next() {
		if !used[a] && portsFree(a.Next()) {
			return a.Next(), a.Next().Next(), nil
		}
	}
	return host, sbx, fmt.Errorf("the sandbox address pool %s is exhausted", m.cfg.Pool)
}

// slot is the first address of the /30 holding a.
func slot(a netip.Addr) netip.Addr {
	b := a.As4()
	b[3] &^= 3
	return netip.AddrFrom4(b)
}

// plumb makes the veth on the host, the sandbox's end (named peer) still
// on the host side until Join moves it.
func (n *Net) plumb(ctx context.Context) error {
	steps := [][]string{
		{"link", "add", n.veth, "type", "veth", "peer", "name", n.peer},
		{"addr", "add", n.host.String() + "/30", "dev", n.veth},
		{"link", "set", n.veth, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, "", "ip", s...); err != nil {
			return err
		}
	}
	// Accept in iptables' FORWARD chain, whose policy may be DROP; our own
	// table decides.
	if _, err := lookSbin("iptables"); err == nil {
		for _, r := range n.iptablesRules() {
			if err := run(ctx, "", "iptables", append([]string{"-w", "-I", "FORWARD", "1"}, r...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// Join gives the sandbox its end of the veth: in a new namespace (pid 0;
// NetnsPath then names it, for a runtime that joins a namespace by path) or
// in the network namespace of process pid (a container the runtime has
// created but not started: its namespace is then owned by the container's
// user namespace, which sysfs needs). Either way the namespace gets the name
// NetnsPath, loopback, eth0 with the sandbox's address and a default route
// to the host end.
func (n *Net) Join(ctx context.Context, pid int) error {
	first := []string{"netns", "add", n.ns}
	if pid > 0 {
		first = []string{"netns", "attach", n.ns, strconv.Itoa(pid)}
	}
	steps := [][]string{
		first,
		{"link", "set", n.peer, "netns", n.ns},
		{"-n", n.ns, "link", "set", n.peer, "name", "eth0"},
		{"-n", n.ns, "addr", "add", n.sbx.String() + "/30", "dev", "eth0"},
		{"-n", n.ns, "link", "set", "lo", "up"},
		{"-n", n.ns, "link", "set", "eth0", "up"},
		{"-n", n.ns, "route", "add", "default", "via", n.host.String()},
	}
	for _, s := range steps {
		if err := run(ctx, "", "ip", s...); err != nil {
			return fmt.Errorf("sandboxnet: %w", err)
		}
	}
	return nil
}

func (n *Net) iptablesRules() [][]string {
	return [][]string{
		{"-i", n.veth, "-m", "comment", "--comment", "ds-sandbox", "-j", "ACCEPT"},
		{"-o", n.veth, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-m", "comment", "--comment", "ds-sandbox", "-j", "ACCEPT"},
	}
}

// sockets are what a network's servers serve on.
type sockets struct {
	proxy, dnsTCP net.Listener
	dnsUDP        net.PacketConn
	plog          *packetLog // nil: refused packets are not reported
	group         uint16     // plog's group
}

func (s *sockets) close() {
	if s.proxy != nil {
		s.proxy.Close()
	}
	if s.dnsTCP != nil {
		s.dnsTCP.Close()
	}
	if s.dnsUDP != nil {
		s.dnsUDP.Close()
	}
	if s.plog != nil {
		s.plog.close()
	}
}

// openHost opens the packet log and listens on the host end of the veth.
func (n *Net) openHost(ctx context.Context, s *sockets) error {
	if err := n.m.enableForwarding(); err != nil {
		return err
	}
	// The log group first: the rules name it only once it is this
	// network's.
	pl, group, perr := openPacketLogFrom(logGroup(n.host))
	if perr != nil {
		// The packets are still rejected; only their reports are lost.
		n.m.log.Warn("sandboxnet: packets the rules refuse will not be reported", "netns", n.ns, "err", perr)
	} else {
		s.plog, s.group = pl, group
	}
	var lc net.ListenConfig
	var err error
	if s.proxy, err = lc.Listen(ctx, "tcp4", netip.AddrPortFrom(n.host, ProxyPort).String()); err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	if s.dnsTCP, err = lc.Listen(ctx, "tcp4", netip.AddrPortFrom(n.host, DNSPort).String()); err != nil {
		return fmt.Errorf("dns server: %w", err)
	}
	if s.dnsUDP, err = lc.ListenPacket(ctx, "udp4", netip.AddrPortFrom(n.host, DNSPort).String()); err != nil {
		return fmt.Errorf("dns server: %w", err)
	}
	return nil
}

// applyRules replaces the network's rules with those of mode: on the host,
// or inside a rootless sandbox's namespace.
func (n *Net) applyRules(ctx context.Context, mode string) error {
	if n.user != nil {
		host, err := hostAddrs()
		if err != nil {
			return fmt.Errorf("list the host's addresses: %w", err)
		}
		return n.user.nft(ctx, userRuleset(host, mode, n.group))
	}
	return run(ctx, ruleset(n.table, n.veth, n.host, n.sbx, mode, n.group), "nft", "-f", "-")
}

// start opens the servers' sockets, applies the rules of pol, starts the
// DNS server, the proxy and the reader of the packets the rules refuse and,
// for a rootless network, slirp4netns (after the rules: nothing leaves
// unjudged).
func (n *Net) start(ctx context.Context, pol *netpolicy.Policy) (err error) {
	var s sockets
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if n.user != nil {
		err = n.user.open(ctx, &s, func(msg string, args ...any) { n.m.log.Warn(msg, append(args, "net_key", n.key)...) })
	} else {
		err = n.openHost(ctx, &s)
	}
	if err != nil {
		return err
	}
	n.group = s.group
	if err := n.applyRules(ctx, pol.Mode()); err != nil {
		return err
	}
	if n.user != nil {
		if err := n.user.startSlirp(ctx, n.key); err != nil {
			return err
		}
	}
	n.policy.Store(pol)
	n.mode = pol.Mode()
	n.proxy = egress.New(pol, egress.Options{
		Resolver:    n.resolver.lookup,
		Dial:        n.dial,
		OriginalDst: egress.OriginalDst,
		OnDeny: func(d egress.Denial) {
			n.deny(api.NetworkDenial{Time: d.Time, Host: d.Host, IP: addrString(d.IP), Reason: d.Reason})
		},
		Logger: n.m.log,
	})
	sctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	if pl := s.plog; pl != nil {
		pl.report = n.deny
		n.plog.Store(pl)
		n.wg.Add(2)
		go func() { defer n.wg.Done(); pl.run() }()
		go func() { defer n.wg.Done(); <-sctx.Done(); n.plog.Store(nil); pl.close() }()
	}
	n.wg.Add(3)
	go func() {
		defer n.wg.Done()
		if err := n.proxy.Serve(sctx, s.proxy); err != nil {
			n.m.log.Error("sandboxnet: egress proxy stopped", "netns", n.ns, "err", err)
		}
	}()
	go func() { defer n.wg.Done(); n.serveDNSTCP(sctx, s.dnsTCP) }()
	go func() { defer n.wg.Done(); n.serveDNSUDP(sctx, s.dnsUDP) }()
	return nil
}

// dial connects the proxy upstream, never to an address of the host itself:
// the proxy runs in the host's namespace, so a listed name or range that
// resolves to one of the host's addresses would reach services the rules
// keep the sandbox from.
func (n *Net) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	if isHostAddr(ap.Addr()) {
		n.deny(api.NetworkDenial{Time: time.Now(), IP: ap.Addr().String(), Reason: "an address of the host itself"})
		return nil, fmt.Errorf("sandboxnet: %s is an address of the host itself", ap.Addr())
	}
	return n.m.cfg.Dial(ctx, network, addr)
}

// isHostAddr reports whether a is loopback or assigned to an interface of
// the host.
func isHostAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: refuse
	}
	for _, ia := range addrs {
		if pf, err := netip.ParsePrefix(ia.String()); err == nil && pf.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// enableForwarding turns on IPv4 forwarding (allow routes through the
// host), which a host running Docker already has.
func (m *Manager) enableForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}

// SetPolicy changes the policy in force: allow, whitelist or deny. The
// rules change in one nftables transaction, then the proxy's and DNS
// server's policy.
func (n *Net) SetPolicy(ctx context.Context, pol api.NetworkPolicy) error {
	compiled, err := netpolicy.Compile(pol)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return api.Errorf(api.ErrNotFound, "sandboxnet: the network is closed")
	}
	// Narrowing: the proxy and DNS first, then the packets; widening: the
	// other way round. Either way no moment allows more than both policies.
	// The rules are applied whatever becomes of the caller (a client that
	// goes away must not leave them half-changed), and a failure puts the
	// old policy back everywhere.
	old := n.policy.Load()
	narrowing := compiled.Mode() != api.NetworkAllow
	if narrowing {
		n.policy.Store(compiled)
		n.proxy.SetPolicy(compiled)
	}
	if err := n.applyRules(context.WithoutCancel(ctx), compiled.Mode()); err != nil {
		if narrowing {
			n.policy.Store(old)
			n.proxy.SetPolicy(old)
		}
		return fmt.Errorf("sandboxnet: apply the %s rules (the %s policy stays in force): %w", compiled.Mode(), old.Mode(), err)
	}
	n.mode = compiled.Mode()
	if !narrowing {
		n.policy.Store(compiled)
		n.proxy.SetPolicy(compiled)
	}
	return nil
}

// Close stops the DNS server and the proxy and removes the rules, the veth
// and the namespace. It is idempotent; the sandbox should be gone first.
func (n *Net) Close(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.stop()
	return n.teardown(ctx)
}

// Detach stops the DNS server and the proxy (and a rootless network's
// slirp4netns, which exits with the daemon anyway) but leaves the namespace
// and the rules (which keep everything else shut) for the next daemon's
// Recover. Close still removes them.
func (n *Net) Detach() { n.stop() }

// stop stops the listeners and slirp4netns, once.
func (n *Net) stop() {
	n.mu.Lock()
	cancel := n.cancel
	n.cancel = nil
	n.mu.Unlock()
	if n.user != nil {
		n.user.stopSlirp()
	}
	if cancel != nil {
		cancel()
		n.wg.Wait()
	}
}

// teardown removes what plumb and start made, ignoring what is missing. A
// rootless network's namespace and rules are the container's, gone with
// it: only our hold on them is released.
func (n *Net) teardown(ctx context.Context) error {
	if n.user != nil {
		n.user.close()
		return nil
	}
	var errs []error
	if _, err := lookSbin("iptables"); err == nil {
		for _, r := range n.iptablesRules() {
			for run(ctx, "", "iptables", append([]string{"-w", "-D", "FORWARD"}, r...)...) == nil {
			}
		}
	}
	if err := run(ctx, "", "nft", "delete", "table", "inet", n.table); err != nil && !strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	if _, err := net.InterfaceByName(n.veth); err == nil {
		if err := run(ctx, "", "ip", "link", "del", n.veth); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat(n.NetnsPath()); err == nil {
		if err := run(ctx, "", "ip", "netns", "del", n.ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remove removes whatever is left of the network of key (a sandbox that
// reuses a key after a crash).
func (m *Manager) Remove(ctx context.Context, key string) error {
	if !keyRe.MatchString(key) {
		return api.Errorf(api.ErrInvalid, "sandboxnet: bad key %q", key)
	}
	return m.newNet(key).teardown(ctx)
}

// Reap removes the networks of this manager whose key live does not know:
// namespaces, tables, and iptables rules of veths that no longer exist.
func (m *Manager) Reap(ctx context.Context, live func(key string) bool) (int, error) {
	var errs []error
	dead := map[string]bool{}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if key, ok := strings.CutPrefix(e.Name(), "dss-"+m.cfg.Tag+"-"); ok && keyRe.MatchString(key) && !live(key) {
				dead[key] = true
			}
		}
	}
	if out, err := output(ctx, "nft", "list", "tables", "inet"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			name := strings.TrimPrefix(strings.TrimSpace(line), "table inet ")
			if key, ok := strings.CutPrefix(name, "dss_"+m.cfg.Tag+"_"); ok && keyRe.MatchString(key) && !live(key) {
				dead[key] = true
			}
		}
	}
	for key := range dead {
		if err := m.newNet(key).teardown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	m.reapIptables(ctx)
	return len(dead), errors.Join(errs...)
}

// reapIptables deletes our FORWARD rules naming veths that are gone.
func (m *Manager) reapIptables(ctx context.Context) {
	out, err := output(ctx, "iptables", "-w", "-S", "FORWARD")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "-A" || !strings.Contains(line, "ds-sandbox") {
			continue
		}
		for i := 2; i+1 < len(f); i++ {
			if (f[i] == "-i" || f[i] == "-o") && strings.HasPrefix(f[i+1], vethPrefix) {
				if _, err := net.InterfaceByName(f[i+1]); err != nil {
					args := append([]string{"-w", "-D"}, f[1:]...)
					_ = run(ctx, "", "iptables", unquote(args)...)
				}
				break
			}
		}
	}
}

// unquote strips the quotes iptables -S puts around comments.
func unquote(args []string) []string {
	for i, a := range args {
		args[i] = strings.Trim(a, `"`)
	}
	return args
}

// lockFile takes an exclusive flock on p (created if needed) and returns
// its release.
func lockFile(p string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// cache resolves names for the DNS server and the proxy alike, so a
// sandbox's answer and the proxy's check agree on a name's addresses.
type cache struct {
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	mu      sync.Mutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	addrs []netip.Addr
	err   error
	until time.Time
}

const (
	cacheTTL     = 30 * time.Second
	cacheMax     = 4096
	cacheFailTTL = 5 * time.Second
)

func newCache(resolve func(ctx context.Context, host string) ([]netip.Addr, error)) *cache {
	return &cache{resolve: resolve, entries: map[string]cacheEntry{}}
}

func (c *cache) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	now := time.Now()
	c.mu.Lock()
	if e, ok := c.entries[host]; ok && now.Before(e.until) {
		c.mu.Unlock()
		return e.addrs, e.err
	}
	c.mu.Unlock()
	addrs, err := c.resolve(ctx, host)
	if ctx.Err() != nil {
		return addrs, err // the caller gave up: remember nothing
	}
	ttl := cacheTTL
	if err != nil {
		ttl = cacheFailTTL
	}
	c.mu.Lock()
	if len(c.entries) >= cacheMax {
		clear(c.entries)
	}
	c.entries[host] = cacheEntry{addrs: addrs, err: err, until: now.Add(ttl)}
	c.mu.Unlock()
	return addrs, err
}

// String describes the network for logs.
func (n *Net) String() string {
	if n.user != nil {
		return "rootless " + n.key + " " + n.sbx.String() + " (" + strconv.Quote(n.Mode()) + ")"
	}
	return n.ns + " " + n.veth + " " + n.sbx.String() + " via " + n.host.String() + " (" + strconv.Quote(n.Mode()) + ")"
}
