package sandboxnet

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// logMsg builds an nfnetlink_log packet message as the kernel sends it.
func logMsg(prefix string, payload []byte) []byte {
	body := []byte{syscall.AF_INET, 0, 0x40, 0x01}
	body = append(body, attr(nfulaPrefix, append([]byte(prefix), 0))...)
	body = append(body, attr(nfulaPayload, payload)...)
	msg := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysUlog<<8|nfulnlMsgPacket)
	return append(msg, body...)
}

// ipv4 is the start of an IPv4 packet to dst with a transport header whose
// destination port is port.
func ipv4(proto byte, dst string, port uint16) []byte {
	p := make([]byte, 24)
	p[0] = 0x45
	p[9] = proto
	a := netip.MustParseAddr(dst).As4()
	copy(p[16:], a[:])
	binary.BigEndian.PutUint16(p[22:], port)
	return p
}

func TestParseLogMessages(t *testing.T) {
	now := time.Now()
	b := append(logMsg(prefixSpecial, ipv4(unix.IPPROTO_TCP, "169.254.169.254", 80)), logMsg(prefixPolicy, ipv4(unix.IPPROTO_UDP, "203.0.113.10", 7))...)
	b = append(b, logMsg(prefixHost, ipv4(unix.IPPROTO_ICMP, "10.213.0.1", 0))...)
	b = append(b, logMsg(prefixHost, []byte{0x60, 0, 0})...) // not IPv4: skipped
	got := parseLogMessages(b, now)
	if len(got) != 3 {
		t.Fatalf("%d denials, want 3: %+v", len(got), got)
	}
	want := []struct {
		proto, ip string
		port      int
		reason    string
	}{
		{"tcp", "169.254.169.254", 80, logReason(prefixSpecial)},
		{"udp", "203.0.113.10", 7, logReason(prefixPolicy)},
		{"icmp", "10.213.0.1", 0, logReason(prefixHost)},
	}
	for i, w := range want {
		d := got[i]
		if d.Protocol != w.proto || d.IP != w.ip || d.Port != w.port || d.Reason != w.reason || !d.Time.Equal(now) {
			t.Errorf("denial %d = %+v, want %+v", i, d, w)
		}
	}
}

func TestLogGroupsOfOnePoolDiffer(t *testing.T) {
	seen := map[uint16]netip.Addr{}
	pool := netip.MustParsePrefix("10.213.0.0/16")
	for a := pool.Addr().Next(); pool.Contains(a); a = a.Next().Next().Next().Next() {
		g := logGroup(a)
		if prev, dup := seen[g]; dup {
			t.Fatalf("%s and %s share log group %d", prev, a, g)
		}
		seen[g] = a
	}
}

// FuzzParseLogMessages: whatever a netlink read holds, the decoder neither
// panics nor reports a packet without an address.
func FuzzParseLogMessages(f *testing.F) {
	f.Add(logMsg(prefixSpecial, ipv4(unix.IPPROTO_TCP, "169.254.169.254", 80)))
	f.Add(append(logMsg(prefixPolicy, ipv4(unix.IPPROTO_UDP, "203.0.113.10", 7)), 1, 2, 3))
	f.Add(logMsg("", []byte{0x4f, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range parseLogMessages(b, time.Now()) {
			if _, err := netip.ParseAddr(d.IP); err != nil || d.Protocol == "" || d.Reason == "" {
				t.Fatalf("bad denial %+v", d)
			}
		}
	})
}

func TestRulesWithoutAGroupDoNotLog(t *testing.T) {
	host, sbx := netip.MustParseAddr("10.213.0.1"), netip.MustParseAddr("10.213.0.2")
	if r := ruleset("dss_t_k", "dssvk", host, sbx, "allow", 0); strings.Contains(r, " log ") || !strings.Contains(r, "reject") {
		t.Errorf("group 0: the rules log or do not reject:\n%s", r)
	}
	if r := ruleset("dss_t_k", "dssvk", host, sbx, "allow", 0x4001); !strings.Contains(r, "group 16385") {
		t.Errorf("group 0x4001 is not in the rules:\n%s", r)
	}
}
