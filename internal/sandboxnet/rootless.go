package sandboxnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
)

// Rootless networks: a daemon that is not root can make no veth and write
// no rule on the host. Its sandboxes (containers of a rootless runtime, each
// in a user namespace the daemon's user owns) get instead:
//
//   - slirp4netns, started by the daemon as its own user, attached to the
//     container's network namespace: a tap device (tap0, 10.0.2.100/24,
//     default route to 10.0.2.2) whose packets slirp4netns turns into the
//     daemon's own sockets on the host. It runs with --disable-host-loopback
//     (10.0.2.2 does not lead to the host's loopback), --disable-dns (no
//     resolver of its own) and --enable-seccomp (the packet parser runs
//     with few system calls; --enable-sandbox fails in a runc container's
//     user namespace, at its setegid(0)). It exits when the daemon does
//     (--exit-fd).
//   - one nftables table inside the container's network namespace, written
//     by the daemon through nsenter (the daemon's user owns the container's
//     user namespace, so it may enter it with every capability there; the
//     sandbox's processes hold none, so cannot change the table). Everything
//     the sandbox sends is judged at the output hook, before slirp4netns
//     sees it: loopback is the sandbox's own; under allow the special ranges
//     (netpolicy.Special) and every address of the host are refused, the
//     rest leaves through slirp4netns; under whitelist TCP is redirected to
//     the egress proxy and everything else refused; under deny everything
//     but loopback is refused. DNS (to any server) is redirected to our DNS
//     server. IPv6 is dropped.
//   - the DNS server (127.0.0.1:53) and egress proxy (127.0.0.1:3128)
//     listening inside the namespace, on sockets made there by a helper (the
//     agent binary run as NetSockets, through nsenter) and served by the
//     daemon; the proxy dials upstream from the host as the daemon's user.
//     The packets the rules refuse are logged to an nfnetlink_log group of
//     the namespace, on a netlink socket the helper makes too.
//
// slirp4netns rather than pasta (passt): Debian 12 packages slirp4netns
// 1.2.0, the stack rootless Podman, Docker and rootlesskit have used for
// years, with a flag that closes the host's loopback and a seccomp filter
// for itself; its pasta is a 2023 snapshot, and pasta maps the
// gateway address to the host by default. Throughput (slirp copies every
// packet in user space) matters less to a code sandbox than a small,
// well-known attack surface.

// rootlessTable is the nftables table inside a rootless sandbox's namespace
// (the namespace is the sandbox's own: one table, one name).
const rootlessTable = "dss"

// rootlessLogGroup is the nfnetlink_log group inside the namespace: groups
// are per namespace, and this one holds only the sandbox's rules.
const rootlessLogGroup = 1

// slirpAddr is the sandbox's address on slirp4netns's network.
var slirpAddr = netip.MustParseAddr("10.0.2.100")

var loopback = netip.MustParseAddr("127.0.0.1")

// userNet is what a rootless network adds to Net.
type userNet struct {
	helper, helperEnv []string // the NetSockets helper's command
	userns, netns     *os.File // the container's namespaces, held open

	mu        sync.Mutex // guards the slirp fields
	slirpPid  int
	slirpExit *os.File      // closing it makes slirp4netns exit
	slirpDone chan struct{} // closed when it has exited (nil: not running)
}

// AvailableRootless returns nil when rootless sandbox networks can be made
// here, or an error saying what is missing.
func (m *Manager) AvailableRootless() error {
	var missing []string
	for _, x := range []struct{ bin, pkg string }{{"slirp4netns", "slirp4netns"}, {"nft", "nftables"}, {"nsenter", "util-linux"}} {
		if _, err := lookSbin(x.bin); err != nil {
			missing = append(missing, fmt.Sprintf("the %s command is not installed (apt-get install %s)", x.bin, x.pkg))
		}
	}
	// slirp4netns makes its tap device inside the sandbox's namespace, but
	// opens /dev/net/tun as the daemon's user: udev makes it 0666, some
	// minimal hosts leave it root's.
	if err := unix.Access("/dev/net/tun", unix.R_OK|unix.W_OK); err != nil {
		missing = append(missing, fmt.Sprintf("/dev/net/tun is not usable by the daemon's user (%v): chmod 0666 /dev/net/tun, as udev does (scripts/oci-setup.sh)", err))
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// RootlessEnforces says what rootless sandbox networks enforce, for a
// backend's backend.Enforcer.
func RootlessEnforces() []string {
	return []string{
		"network allow (rootless: slirp4netns as the daemon's user, nftables rules inside the sandbox's namespace): the internet, not the host's loopback or addresses, other sandboxes, private or metadata addresses",
		"network whitelist (rootless): listed destinations only, through the egress proxy (SNI/Host checked, names resolved by us)",
		"network policy per execution (allow and whitelist sandboxes)",
	}
}

// NewRootless returns the network of a rootless runtime's sandbox before its
// container exists: ResolvConf and ProxyURL are known (127.0.0.1 inside the
// sandbox), nothing is made until Attach. helper (with helperEnv added to
// the environment) is the command of the agent's network sockets helper
// (agent.NetSocketsArg), to which the descriptor and socket specs are
// appended.
func (m *Manager) NewRootless(key string, helper, helperEnv []string) (*Net, error) {
	if !keyRe.MatchString(key) {
		return nil, api.Errorf(api.ErrInvalid, "sandboxnet: bad key %q", key)
	}
	if len(helper) == 0 {
		return nil, api.Errorf(api.ErrInvalid, "sandboxnet: no helper command")
	}
	n := m.newNet(key)
	n.host, n.sbx = loopback, slirpAddr
	n.user = &userNet{helper: helper, helperEnv: helperEnv}
	return n, nil
}

// Attach makes the network of a rootless sandbox whose container (created,
// not started: no code of the sandbox runs yet) has its init at pid, under
// policy pol (allow or whitelist): the rules, the DNS server and proxy, and
// slirp4netns. On error the caller Closes n.
func (n *Net) Attach(ctx context.Context, pid int, pol api.NetworkPolicy) error {
	if n.user == nil {
		return errors.New("sandboxnet: Attach is for rootless networks")
	}
	if pol.Policy != api.NetworkAllow && pol.Policy != api.NetworkWhitelist {
		return api.Errorf(api.ErrInvalid, "sandboxnet: a sandbox network is made for allow or whitelist, not %q", pol.Policy)
	}
	compiled, err := netpolicy.Compile(pol)
	if err != nil {
		return err
	}
	if err := n.user.openNamespaces(pid); err != nil {
		return fmt.Errorf("sandboxnet: %w", err)
	}
	if err := n.start(ctx, compiled); err != nil {
		return fmt.Errorf("sandboxnet: %w", err)
	}
	return nil
}

// RecoverRootless finds the network of a running rootless sandbox (its
// container's init at pid) after a daemon restart: its rules outlived the
// daemon, slirp4netns, the DNS server and the proxy did not and start again
// under pol.
func (m *Manager) RecoverRootless(ctx context.Context, state map[string]string, pol api.NetworkPolicy, pid int, helper, helperEnv []string) (*Net, error) {
	n, err := m.NewRootless(state["net_key"], helper, helperEnv)
	if err != nil || state["net_mode"] != "rootless" {
		return nil, api.Errorf(api.ErrInvalid, "sandboxnet: unusable recovery state %v", state)
	}
	compiled, err := netpolicy.Compile(pol)
	if err != nil {
		return nil, err
	}
	if err := n.user.openNamespaces(pid); err != nil {
		return nil, api.Errorf(api.ErrNotFound, "sandboxnet: the sandbox's namespaces are gone: %v", err)
	}
	// The last daemon's slirp4netns exits when that daemon's descriptors
	// close; its tap device must be gone before the next one makes its own.
	if old, err := strconv.Atoi(state["net_slirp"]); err == nil {
		waitSlirpGone(old, 5*time.Second)
	}
	if err := n.start(ctx, compiled); err != nil {
		n.stop()
		_ = n.teardown(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("sandboxnet: %w", err)
	}
	return n, nil
}

// openNamespaces opens the user and network namespaces of process pid.
func (u *userNet) openNamespaces(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("bad pid %d", pid)
	}
	var err error
	if u.userns, err = os.Open(fmt.Sprintf("/proc/%d/ns/user", pid)); err != nil {
		return err
	}
	if u.netns, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil {
		return err
	}
	return nil
}

// enter is a command run by nsenter in the sandbox's user and network
// namespaces, as root there (every capability over the namespace, none
// over the host). extra are descriptors it gets from 5 on.
func (u *userNet) enter(ctx context.Context, extra []*os.File, argv ...string) (*exec.Cmd, error) {
	nsenter, err := lookSbin("nsenter")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, nsenter, append([]string{"--user=/proc/self/fd/3", "--net=/proc/self/fd/4", "--"}, argv...)...)
	cmd.ExtraFiles = append([]*os.File{u.userns, u.netns}, extra...)
	return cmd, nil
}

// nft applies an nftables script inside the namespace.
func (u *userNet) nft(ctx context.Context, script string) error {
	bin, err := lookSbin("nft")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd, err := u.enter(ctx, nil, bin, "-f", "-")
	if err != nil {
		return err
	}
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f - in the sandbox's namespace: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// startSlirp starts slirp4netns on the namespace and waits until it has
// configured tap0.
func (u *userNet) startSlirp(ctx context.Context, key string) error {
	bin, err := lookSbin("slirp4netns")
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return err
	}
	out := &boundedBuffer{max: 4 << 10}
	cmd := exec.Command(bin, "--configure", "--mtu=65520", "--disable-host-loopback", "--disable-dns",
		"--enable-seccomp", "--ready-fd=3", "--exit-fd=4",
		"--userns-path=/proc/self/fd/5", "--netns-type=path", "/proc/self/fd/6", "tap0")
	cmd.Args[0] = "slirp4netns" // (the key is in the error messages, not argv)
	cmd.ExtraFiles = []*os.File{readyW, exitR, u.userns, u.netns}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Start()
	readyW.Close()
	exitR.Close()
	if err != nil {
		exitW.Close()
		return fmt.Errorf("slirp4netns: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // the reaper
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := readyR.Read(b)
		ready <- err
	}()
	fail := func(err error) error {
		exitW.Close()
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("slirp4netns for network %s: %w: %s", key, err, bytes.TrimSpace(out.Bytes()))
	}
	select {
	case err := <-ready:
		if err != nil {
			return fail(errors.New("exited before configuring its interface"))
		}
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-time.After(20 * time.Second):
		return fail(errors.New("not ready after 20s"))
	}
	u.mu.Lock()
	u.slirpPid, u.slirpExit, u.slirpDone = cmd.Process.Pid, exitW, done
	u.mu.Unlock()
	return nil
}

// stopSlirp makes slirp4netns exit and waits for it.
func (u *userNet) stopSlirp() {
	u.mu.Lock()
	exitW, done := u.slirpExit, u.slirpDone
	u.slirpExit, u.slirpDone = nil, nil
	u.mu.Unlock()
	if exitW == nil {
		return
	}
	exitW.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// It must not outlive the network: its tap would stay open.
		if p, err := os.FindProcess(u.slirpPid); err == nil {
			_ = p.Kill()
		}
		<-done
	}
}

// close releases the namespaces.
func (u *userNet) close() {
	for _, f := range []*os.File{u.userns, u.netns} {
		if f != nil {
			f.Close()
		}
	}
	u.userns, u.netns = nil, nil
}

// waitSlirpGone waits up to d for process pid to be gone, when it is a
// slirp4netns.
func waitSlirpGone(pid int, d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "slirp4netns" {
			return
		}
	}
}

// hostAddrs are the host's own IPv4 addresses that are not special (those
// are refused anyway): slirp4netns connects from the host, so a sandbox
// reaching one reaches the host's services listening there.
func hostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		pf, err := netip.ParsePrefix(a.String())
		if err == nil && pf.Addr().Is4() && !netpolicy.Special(pf.Addr()) {
			out = append(out, pf.Addr())
		}
	}
	return out, nil
}

// userRuleset is the nftables script that (re)places the table inside a
// rootless sandbox's namespace with the rules of mode (see the top of this
// file). Everything is judged at the output hook: the sandbox's packets
// are locally generated in its namespace. Refused packets are rejected and
// logged as ruleset's are.
func userRuleset(host []netip.Addr, mode string, group uint16) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	refuse := func(match, prefix string) {
		if mode == api.NetworkDeny {
			prefix = prefixPolicy
		}
		if group != 0 {
			w("    %s %s log prefix %q group %d", match, logRate, prefix, group)
		}
		w("    %s meta l4proto tcp reject with tcp reset", match)
		w("    %s reject with icmpx type admin-prohibited", match)
	}
	w("add table inet %s", rootlessTable)
	w("delete table inet %s", rootlessTable)
	w("table inet %s {", rootlessTable)

	// Redirects (the output hook's NAT, at dstnat - 5 = -105, runs before
	// its filter): DNS to our server whatever server was asked; under
	// whitelist every TCP flow leaving loopback to the egress proxy.
	w("  chain sbx_nat {")
	w("    type nat hook output priority -105; policy accept;")
	if mode != api.NetworkDeny {
		w("    meta nfproto ipv4 udp dport 53 redirect to :%d", DNSPort)
		w("    meta nfproto ipv4 tcp dport 53 redirect to :%d", DNSPort)
	}
	if mode == api.NetworkWhitelist {
		w("    meta nfproto ipv4 meta l4proto tcp ip daddr != 127.0.0.0/8 redirect to :%d", ProxyPort)
	}
	w("  }")

	w("  chain sbx_out {")
	w("    type filter hook output priority filter - 5; policy accept;")
	// The namespace's own loopback over IPv6; no other IPv6.
	w("    meta nfproto ipv6 oifname \"lo\" accept")
	w("    meta nfproto ipv6 drop")
	// Our DNS server and proxy, on the namespace's loopback: the proxy under
	// whitelist only (as on a veth), neither under deny.
	if mode != api.NetworkWhitelist {
		refuse(fmt.Sprintf("ip daddr %s tcp dport %d", loopback, ProxyPort), prefixPolicy)
	}
	if mode == api.NetworkDeny {
		refuse(fmt.Sprintf("ip daddr %s th dport %d", loopback, DNSPort), prefixPolicy)
	}
	// What stays in the namespace: loopback (where the redirects lead,
	// though the packet's route was decided before them) and the
	// namespace's own addresses, such as our servers' answers to 10.0.2.100.
	w("    ip daddr 127.0.0.0/8 accept")
	w("    oifname \"lo\" accept")
	if mode == api.NetworkAllow {
		refuse(fmt.Sprintf("ip daddr { %s }", specialV4()), prefixSpecial)
		if len(host) > 0 {
			var hs []string
			for _, a := range host {
				hs = append(hs, a.String())
			}
			refuse(fmt.Sprintf("ip daddr { %s }", strings.Join(hs, ", ")), prefixHost)
		}
		w("    accept")
	} else {
		refuse("meta nfproto ipv4", prefixPolicy)
	}
	w("  }")

	// Nothing new comes in from outside (slirp4netns forwards no port; this
	// holds even if it did).
	w("  chain sbx_in {")
	w("    type filter hook input priority filter - 5; policy accept;")
	w("    iifname != \"lo\" ct state != { established, related } drop")
	w("  }")
	w("}")
	return b.String()
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *boundedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
