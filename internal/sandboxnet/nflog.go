package sandboxnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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

// openPacketLogFrom binds the first free group from first on (within
// 0x4000..0x7fff). A group is bound by one socket at most, so a group it
// returns is this network's alone: another pool's network (another daemon)
// or one past the first 16384 of a wide pool cannot receive its packets, nor
// it theirs. The rules name the group only after it is bound.
func openPacketLogFrom(first uint16) (*packetLog, uint16, error) {
	var errs []error
	for i := range uint16(groupTries) {
		g := 0x4000 | (first+i)&0x3fff
		l, err := openPacketLog(g)
		if err == nil {
			return l, g, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EBUSY) {
			break // not a group taken: the next would fail alike
		}
	}
	return nil, 0, errors.Join(errs...)
}

// packetLog is a bound nfnetlink_log socket.
//
// The kernel queues a packet's message on the socket before the rule that
// follows the log rule rejects it, so by the time a program learns it was
// refused, the message is in the socket. flush reports everything queued
// there: called when an execution ends, it puts every packet the execution
// caused among its denials. run and flush take mu around each read and its
// reports, so a message is reported once and in order.
type packetLog struct {
	f      *os.File
	mu     sync.Mutex
	report func(api.NetworkDenial)
	buf    []byte // guarded by mu
}

// openPacketLog binds group. EPERM (or EBUSY) means another socket holds it.
func openPacketLog(group uint16) (*packetLog, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	return bindPacketLog(fd, group)
}

// bindPacketLog binds group on fd, a NETLINK_NETFILTER socket not yet
// bound (made in the namespace whose packets it is to receive), which it
// takes over, closing it on error.
func bindPacketLog(fd int, group uint16) (*packetLog, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	l := &packetLog{f: os.NewFile(uintptr(fd), "nflog")}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, logCopy)
	mode[4] = nfulnlCopyPacket
	// Each packet is sent at once (a queue of one), not batched for up to
	// a second: the denial must reach the execution that caused it before
	// that execution ends.
	one := binary.BigEndian.AppendUint32(nil, 1)
	msg := configMsg(group, attr(nfulaCfgCmd, []byte{nfulnlCfgCmdBind}), attr(nfulaCfgMode, mode),
		attr(nfulaCfgQthresh, one), attr(nfulaCfgTimeout, one))
	if err := l.request(msg); err != nil {
		l.close()
		return nil, fmt.Errorf("bind nflog group %d: %w", group, err)
	}
	return l, nil
}

// request sends msg and waits (at most 5 s) for the kernel's ack.
func (l *packetLog) request(msg []byte) error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return !errors.Is(serr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	_ = l.f.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer l.f.SetReadDeadline(time.Time{})
	buf := make([]byte, 8192)
	for {
		n, err := l.read(buf)
		if err != nil {
			return err
		}
		for m := buf[:n]; len(m) >= unix.NLMSG_HDRLEN; {
			size := int(binary.NativeEndian.Uint32(m))
			if size < unix.NLMSG_HDRLEN || size > len(m) {
				break
			}
			if binary.NativeEndian.Uint16(m[4:]) == unix.NLMSG_ERROR && size >= unix.NLMSG_HDRLEN+4 {
				if errno := -int32(binary.NativeEndian.Uint32(m[unix.NLMSG_HDRLEN:])); errno != 0 {
					return syscall.Errno(errno)
				}
				return nil
			}
			m = m[min(nlAlign(size), len(m)):]
		}
	}
}

func (l *packetLog) read(buf []byte) (int, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
		return !errors.Is(rerr, unix.EAGAIN)
	}); err != nil {
		return 0, err
	}
	return n, rerr
}

// run reads logged packets until the socket is closed and reports each as
// a denial. A receive buffer overrun (ENOBUFS) loses packets, not the loop.
func (l *packetLog) run() {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return
	}
	for {
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			rerr = l.readOne(int(fd))
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			return // closed
		}
		if rerr != nil && !errors.Is(rerr, unix.ENOBUFS) && !errors.Is(rerr, unix.EINTR) {
			return
		}
	}
}

// flush reports every message queued on the socket now, without waiting
// for more.
func (l *packetLog) flush() {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for range 1024 { // bounded: a flood keeps coming
			if err := l.readOne(int(fd)); err != nil && !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EINTR) {
				return
			}
		}
	})
}

// readOne receives one message without blocking and reports its packets;
// l.mu is held.
func (l *packetLog) readOne(fd int) error {
	if l.buf == nil {
		l.buf = make([]byte, 64<<10)
	}
	n, _, err := unix.Recvfrom(fd, l.buf, unix.MSG_DONTWAIT)
	if err != nil {
		return err
	}
	for _, d := range parseLogMessages(l.buf[:n], time.Now()) {
		l.report(d)
	}
	return nil
}

func (l *packetLog) close() { _ = l.f.Close() }

// configMsg is an nfnetlink_log config request for group with attrs.
func configMsg(group uint16, attrs ...[]byte) []byte {
	body := []byte{unix.AF_UNSPEC, 0 /* NFNETLINK_V0 */, 0, 0}
	binary.BigEndian.PutUint16(body[2:], group)
	for _, a := range attrs {
		body = append(body, a...)
	}
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgConfig)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
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
	for len(b) >= unix.NLMSG_HDRLEN {
		size := int(binary.NativeEndian.Uint32(b))
		if size < unix.NLMSG_HDRLEN || size > len(b) {
			break
		}
		typ := binary.NativeEndian.Uint16(b[4:])
		if typ == unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket && size >= unix.NLMSG_HDRLEN+4 {
			if d, ok := parseLogPacket(b[unix.NLMSG_HDRLEN+4:size], now); ok {
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
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		proto = "tcp"
		if p[9] == unix.IPPROTO_UDP {
			proto = "udp"
		}
		if len(p) >= ihl+4 {
			port = int(binary.BigEndian.Uint16(p[ihl+2:]))
		}
	case unix.IPPROTO_ICMP:
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
