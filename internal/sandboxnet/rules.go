package sandboxnet

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
)

// ruleset is the nftables script that (re)places one sandbox's table with
// the rules of mode. It is applied as one transaction: the table never
// exists half-written.
//
// Base chains of every table run at a hook and a packet must pass all of
// them: our drops are final whatever other tables (Docker's, the host's
// firewall) accept; our accepts are not (hence the iptables rules, see the
// package doc).
//
// What the sandbox sends and the rules refuse is rejected (a TCP reset, an
// ICMP "administratively prohibited"), so the program fails at once, and
// logged to the nfnetlink_log group (see nflog.go; 0: none is bound, no
// log), so the refusal is reported. IPv6 (the sandbox has no address for it) and packets with a
// forged source are dropped silently.
func ruleset(table, veth string, host, sbx netip.Addr, mode string, group uint16) string {
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
	from := fmt.Sprintf("iifname %q", veth)
	w("add table inet %s", table)
	w("delete table inet %s", table)
	w("table inet %s {", table)

	// Redirects: DNS to our server whatever server was asked; under
	// whitelist every TCP flow to the egress proxy.
	w("  chain sbx_pre {")
	w("    type nat hook prerouting priority dstnat - 5; policy accept;")
	if mode != api.NetworkDeny {
		w("    iifname %q meta nfproto ipv4 udp dport 53 dnat ip to %s:%d", veth, host, DNSPort)
		w("    iifname %q meta nfproto ipv4 tcp dport 53 dnat ip to %s:%d", veth, host, DNSPort)
	}
	if mode == api.NetworkWhitelist {
		w("    iifname %q meta nfproto ipv4 meta l4proto tcp dnat ip to %s:%d", veth, host, ProxyPort)
	}
	w("  }")

	// The host itself: only our DNS server (and the proxy under whitelist),
	// from the sandbox's own address.
	w("  chain sbx_in {")
	w("    type filter hook input priority filter - 5; policy accept;")
	w("    iifname %q ip saddr != %s drop", veth, sbx)
	if mode != api.NetworkDeny {
		// Answers to connections the host opened, and the rest of flows
		// accepted below.
		w("    iifname %q ct state { established, related } accept", veth)
		w("    iifname %q ip daddr %s udp dport %d accept", veth, host, DNSPort)
		w("    iifname %q ip daddr %s tcp dport %d accept", veth, host, DNSPort)
	}
	if mode == api.NetworkWhitelist {
		w("    iifname %q ip daddr %s tcp dport %d accept", veth, host, ProxyPort)
	}
	w("    iifname %q meta nfproto != ipv4 drop", veth)
	refuse(from, prefixHost)
	// The DNS server and proxy are this sandbox's alone: not the host's,
	// other sandboxes' or containers' (their denials would be blamed on it).
	w("    ip daddr %s tcp dport { %d, %d } drop", host, DNSPort, ProxyPort)
	w("    ip daddr %s udp dport %d drop", host, DNSPort)
	w("  }")

	// Forwarding: only under allow, only to ordinary addresses, never to
	// another sandbox; nothing new may come in.
	w("  chain sbx_fwd {")
	w("    type filter hook forward priority filter - 5; policy accept;")
	w("    oifname %q ct state != { established, related } drop", veth)
	w("    iifname %q meta nfproto != ipv4 drop", veth)
	w("    iifname %q ip saddr != %s drop", veth, sbx)
	if mode == api.NetworkAllow {
		refuse(fmt.Sprintf("%s oifname %q", from, vethPrefix+"*"), prefixSandbox)
		refuse(fmt.Sprintf("%s ip daddr { %s }", from, specialV4()), prefixSpecial)
	} else {
		refuse(from, prefixPolicy)
	}
	w("  }")

	if mode == api.NetworkAllow {
		w("  chain sbx_post {")
		w("    type nat hook postrouting priority srcnat - 5; policy accept;")
		w("    ip saddr %s oifname != %q masquerade", sbx, veth)
		w("  }")
	}
	w("}")
	return b.String()
}

// specialV4 is the IPv4 special ranges as an nftables set body.
func specialV4() string {
	var parts []string
	for _, p := range netpolicy.SpecialPrefixes() {
		if p.Addr().Is4() {
			parts = append(parts, p.String())
		}
	}
	return strings.Join(parts, ", ")
}
