package sandboxnet

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// The packets a sandbox's rules refuse (UDP, ICMP, TCP to addresses no
// policy reaches, anything under deny) are rejected at once, so a program
// fails fast instead of waiting for a timeout, and logged, rate-limited, to
// an nfnetlink_log group of the sandbox's own, which the sandbox's Net reads
// and reports as denials. The proxy and the DNS server report their own.
//
// The protocol (linux/netfilter/nfnetlink_log.h): a NETLINK_NETFILTER socket
// binds a group with a config message; each logged packet then arrives as a
// message of attributes, among them the rule's prefix and the packet.

// Netlink's framing (linux/netlink.h, linux/netfilter/nfnetlink.h), here so
// the parser builds and is fuzzed everywhere.
const (
	nlmsgHdrLen    = 16 // NLMSG_HDRLEN
	nlmsgError     = 2  // NLMSG_ERROR
	nlmFRequest    = 1  // NLM_F_REQUEST
	nlmFAck        = 4  // NLM_F_ACK
	nfnlSubsysUlog = 4  // NFNL_SUBSYS_ULOG
	afUnspec       = 0  // AF_UNSPEC
)

const (
	nfulnlMsgPacket = 0 // NFULNL_MSG_PACKET
	nfulnlMsgConfig = 1 // NFULNL_MSG_CONFIG

	nfulaCfgCmd     = 1 // NFULA_CFG_CMD
	nfulaCfgMode    = 2 // NFULA_CFG_MODE
	nfulaCfgTimeout = 4 // NFULA_CFG_TIMEOUT, in 1/100 s
	nfulaCfgQthresh = 5 // NFULA_CFG_QTHRESH
	nfulaPayload    = 9 // NFULA_PAYLOAD
	nfulaPrefix     = 10

	nfulnlCfgCmdBind = 1 // NFULNL_CFG_CMD_BIND
	nfulnlCopyPacket = 2 // NFULNL_COPY_PACKET

	// logCopy is how much of each packet the kernel sends: the IPv4 header
	// with options and the ports.
	logCopy = 64
	// logRate bounds the packets logged per rule (nftables "limit"); the
	// rest are still rejected, only not reported.
	logRate = "limit rate 20/second burst 50 packets"
)

// Log prefixes: which rule refused a packet.
const (
	prefixSpecial = "special"
	prefixHost    = "host"
	prefixSandbox = "sandbox"
	prefixPolicy  = "policy"
)

// logGroup is the first nfnetlink_log group tried for the network whose
// host end is host: 0x4000 plus the /30's index within its /16, so the
// networks of one /16 pool do not contend for one.
func logGroup(host netip.Addr) uint16 {
	b := host.As4()
	return 0x4000 | (uint16(b[2])<<8|uint16(b[3]))>>2
}

// groupTries bounds how many groups openPacketLogFrom tries.
const groupTries = 64

// configMsg is an nfnetlink_log config request for group with attrs.
func configMsg(group uint16, attrs ...[]byte) []byte {
	body := []byte{afUnspec, 0 /* NFNETLINK_V0 */, 0, 0}
	binary.BigEndian.PutUint16(body[2:], group)
	for _, a := range attrs {
		body = append(body, a...)
	}
	msg := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysUlog<<8|nfulnlMsgConfig)
	binary.NativeEndian.PutUint16(msg[6:], nlmFRequest|nlmFAck)
	return append(msg, body...)
}

// attr is one netlink attribute, padded.
func attr(typ uint16, data []byte) []byte {
	a := make([]byte, nlAlign(4+len(data)))
	binary.NativeEndian.PutUint16(a[0:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(a[2:], typ)
	copy(a[4:], data)
	return a
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// parseLogMessages decodes the packets in one netlink read. Anything
// malformed is skipped: the input comes from the kernel, but a bug must
// not take the daemon down.
func parseLogMessages(b []byte, now time.Time) []api.NetworkDenial {
	var out []api.NetworkDenial
	for len(b) >= nlmsgHdrLen {
		size := int(binary.NativeEndian.Uint32(b))
		if size < nlmsgHdrLen || size > len(b) {
			break
		}
		typ := binary.NativeEndian.Uint16(b[4:])
		if typ == nfnlSubsysUlog<<8|nfulnlMsgPacket && size >= nlmsgHdrLen+4 {
			if d, ok := parseLogPacket(b[nlmsgHdrLen+4:size], now); ok {
				out = append(out, d)
			}
		}
		b = b[min(nlAlign(size), len(b)):]
	}
	return out
}

// parseLogPacket decodes one logged packet's attributes.
func parseLogPacket(b []byte, now time.Time) (api.NetworkDenial, bool) {
	var prefix string
	var payload []byte
	for len(b) >= 4 {
		size := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & 0x3fff // without NLA_F_NESTED, NLA_F_NET_BYTEORDER
		if size < 4 || size > len(b) {
			break
		}
		switch typ {
		case nfulaPrefix:
			prefix = strings.TrimRight(string(b[4:size]), "\x00")
		case nfulaPayload:
			payload = b[4:size]
		}
		b = b[min(nlAlign(size), len(b)):]
	}
	proto, dst, port, ok := parseIPv4(payload)
	if !ok {
		return api.NetworkDenial{}, false
	}
	d := api.NetworkDenial{Time: now, IP: dst.String(), Port: port, Protocol: proto, Reason: logReason(prefix)}
	return d, true
}

// parseIPv4 reads the protocol, destination and destination port (TCP and
// UDP; 0 otherwise) of an IPv4 packet.
func parseIPv4(p []byte) (proto string, dst netip.Addr, port int, ok bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return "", dst, 0, false
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || ihl > len(p) {
		return "", dst, 0, false
	}
	dst = netip.AddrFrom4([4]byte(p[16:20]))
	switch p[9] {
	case syscall.IPPROTO_TCP, syscall.IPPROTO_UDP:
		proto = "tcp"
		if p[9] == syscall.IPPROTO_UDP {
			proto = "udp"
		}
		if len(p) >= ihl+4 {
			port = int(binary.BigEndian.Uint16(p[ihl+2:]))
		}
	case syscall.IPPROTO_ICMP:
		proto = "icmp"
	default:
		proto = fmt.Sprintf("ip proto %d", p[9])
	}
	return proto, dst, port, true
}

// logReason explains a log prefix.
func logReason(prefix string) string {
	switch prefix {
	case prefixSpecial:
		return "a private, loopback, link-local (metadata), CGNAT, multicast or reserved address: refused under every policy"
	case prefixHost:
		return "the host itself: a sandbox reaches only its DNS server (and the egress proxy under whitelist)"
	case prefixSandbox:
		return "another sandbox"
	case prefixPolicy:
		return "not allowed by the network policy (under whitelist only TCP, through the egress proxy, and DNS leave the sandbox; under deny nothing)"
	default:
		return "refused by the network policy"
	}
}
