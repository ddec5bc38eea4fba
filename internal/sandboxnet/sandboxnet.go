// Package sandboxnet gives a sandbox a network of its own and enforces its
// policy from the host, where sandbox code cannot reach the rules:
//
//   - a named network namespace with loopback and one veth whose host end
//     holds the first address of a /30 from a pool (default 10.213.0.0/16)
//     and whose sandbox end (eth0) the second, with a default route to the
//     host end;
//   - one nftables table per sandbox on the host that decides what leaves
//     the veth, replaced atomically when the policy changes;
//   - a DNS server on the host end (every DNS packet the sandbox sends, to
//     any address, is redirected to it) that answers only for names the
//     policy allows, with addresses the policy allows;
//   - the egress proxy (internal/egress) on the host end, enforcing a
//     whitelist: every TCP flow is redirected to it.
//
// Policies:
//
//   - allow: routed out with source NAT, except to special addresses
//     (private, loopback, link-local with the cloud metadata address, CGNAT,
//     multicast, reserved; see netpolicy.Special), the host itself (only its
//     DNS server answers) and other sandboxes. IPv6 is dropped.
//   - whitelist: nothing is forwarded; TCP goes to the egress proxy, which
//     judges each flow by its CONNECT target, SNI or Host against the
//     whitelist and resolves names itself; DNS answers only allowed names.
//     Everything else (UDP other than DNS, ICMP) is rejected, IPv6 dropped.
//   - deny (as a change of a running sandbox's policy, for one execution):
//     every packet from the sandbox is dropped and DNS answers nothing. A
//     sandbox created with deny gets no veth at all (its runtime makes a
//     namespace with loopback only); this package is not involved.
//
// The sandbox holds no capability over the namespace (it is owned by the
// host's user namespace), so it cannot change its addresses, routes or
// rules. Denials — the DNS server's, the proxy's and the packets the rules
// reject (see nflog.go) — are reported to the handler set with OnDenial.
//
// A daemon that is not root gets rootless networks instead (see
// rootless.go): slirp4netns on the container's own namespace, the rules
// and servers inside it. Everything else here needs root (CAP_NET_ADMIN in
// the host's namespace) and the ip (iproute2) and nft (nftables) commands; iptables, when installed, gets
// ACCEPT rules for the veth in its FORWARD chain so a host firewall whose
// policy is DROP (Docker sets one) does not swallow allowed traffic — the
// decision stays with our table, whose drops win.
package sandboxnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Ports on the host end of a sandbox's veth.
const (
	DNSPort   = 53
	ProxyPort = 3128
)

// DefaultPool is the address pool sandboxes' /30s come from.
var DefaultPool = netip.MustParsePrefix("10.213.0.0/16")

// Config configures a Manager.
type Config struct {
	// Tag names this manager's objects (network namespaces "dss-<tag>-<key>",
	// nftables tables "dss_<tag>_<key>"), so managers of different daemons on
	// one host never reap each other's. Lower-case letters and digits, 1–12.
	Tag string
	// Pool is where the /30s come from; default DefaultPool. It must be an
	// IPv4 prefix of at most /24 that overlaps no address of the host's own.
	Pool netip.Prefix
	// Resolver resolves names for the DNS server and the egress proxy;
	// default the host's resolver (net.DefaultResolver).
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects the egress proxy upstream (it is only given IP:port);
	// default net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives debug and error logs; default discards.
	Logger *slog.Logger
}

// Manager creates and finds sandbox networks.
type Manager struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex // serialises address allocation within the process
}

var tagRe = regexp.MustCompile(`^[a-z0-9]{1,12}$`)

// keyRe is what a sandbox network key may be.
var keyRe = regexp.MustCompile(`^[a-z0-9]{1,24}$`)

// New returns a Manager. Errors wrap api.ErrInvalid.
func New(cfg Config) (*Manager, error) {
	if !tagRe.MatchString(cfg.Tag) {
		return nil, api.Errorf(api.ErrInvalid, "sandboxnet: tag %q must be 1-12 lower-case letters or digits", cfg.Tag)
	}
	if !cfg.Pool.IsValid() {
		cfg.Pool = DefaultPool
	}
	cfg.Pool = cfg.Pool.Masked()
	if !cfg.Pool.Addr().Is4() || cfg.Pool.Bits() > 24 {
		return nil, api.Errorf(api.ErrInvalid, "sandboxnet: pool %s must be an IPv4 prefix of /24 or wider", cfg.Pool)
	}
	if cfg.Resolver == nil {
		cfg.Resolver = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: log}, nil
}

// KeyFor makes a network key from any unique string (a container id).
func KeyFor(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

// Available returns nil when sandbox networks can be made here, or an error
// saying what is missing.
func (m *Manager) Available() error {
	if err := supported(); err != nil {
		return err
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "the daemon must run as root to create network namespaces and host firewall rules")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := lookSbin(bin); err != nil {
			pkg := map[string]string{"ip": "iproute2", "nft": "nftables"}[bin]
			missing = append(missing, fmt.Sprintf("the %s command is not installed (apt-get install %s)", bin, pkg))
		}
	}
	if err := m.checkPool(); err != nil {
		missing = append(missing, err.Error())
	}
	// A service listening on every address at the DNS or proxy port takes
	// those ports on every sandbox's host end too. Probed on the host end of
	// the pool's last /30 (allocation starts at the bottom).
	if os.Geteuid() == 0 && !portsFree(lastHostEnd(m.cfg.Pool)) {
		missing = append(missing, fmt.Sprintf("port %d (DNS) or %d (egress proxy) is taken on every address (a service listening on 0.0.0.0?); sandbox networks need both on their host ends", DNSPort, ProxyPort))
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// checkPool refuses a pool that overlaps an address of the host outside our
// own veths.
func (m *Manager) checkPool() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifc := range ifs {
		if strings.HasPrefix(ifc.Name, vethPrefix) {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			pf, err := netip.ParsePrefix(a.String())
			if err == nil && pf.Addr().Is4() && pf.Overlaps(m.cfg.Pool) {
				return fmt.Errorf("the sandbox address pool %s overlaps %s on %s; configure another pool (network_pool)", m.cfg.Pool, pf, ifc.Name)
			}
		}
	}
	return nil
}

// Enforces says what sandbox networks enforce, for a backend's
// backend.Enforcer.
func Enforces() []string {
	return []string{
		"network allow: the internet, not the host, other sandboxes, private or metadata addresses",
		"network whitelist: listed destinations only, through the egress proxy (SNI/Host checked, names resolved by us)",
		"network policy per execution (allow and whitelist sandboxes)",
	}
}

// lastHostEnd is the host end of the pool's last /30.
func lastHostEnd(pool netip.Prefix) netip.Addr {
	b := pool.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<(32-pool.Bits()) - 1 // the pool's last address
	v = v&^3 + 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lookSbin finds a system binary also where an ordinary PATH does not look.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p, err := exec.LookPath(dir + "/" + name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// names of one sandbox network's objects.
func (m *Manager) netnsName(key string) string { return "dss-" + m.cfg.Tag + "-" + key }
func (m *Manager) tableName(key string) string { return "dss_" + m.cfg.Tag + "_" + key }

const vethPrefix = "dsv"

func (m *Manager) vethName(key string) string {
	sum := sha256.Sum256([]byte(m.cfg.Tag + "/" + key))
	return vethPrefix + hex.EncodeToString(sum[:6]) // 15 bytes, the kernel's limit
}

func (m *Manager) peerName(key string) string {
	sum := sha256.Sum256([]byte(m.cfg.Tag + "/" + key))
	return "dsp" + hex.EncodeToString(sum[:6])
}

// run runs one command, returning its error with its output.
func run(ctx context.Context, stdin string, name string, args ...string) error {
	bin, err := lookSbin(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// output runs one command and returns its output.
func output(ctx context.Context, name string, args ...string) (string, error) {
	bin, err := lookSbin(name)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	return string(out), err
}
