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
func ruleset(table, veth string, host, sbx netip.Addr, mode string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
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
	w("    iifname %q drop", veth)
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
	if mode == api.NetworkAllow {
		w("    iifname %q meta nfproto != ipv4 drop", veth)
		w("    iifname %q ip saddr != %s drop", veth, sbx)
		w("    iifname %q oifname %q drop", veth, vethPrefix+"*")
		w("    iifname %q ip daddr { %s } drop", veth, specialV4())
	} else {
		w("    iifname %q drop", veth)
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
