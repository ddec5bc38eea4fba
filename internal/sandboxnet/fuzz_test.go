package sandboxnet

import (
	"context"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
)

// FuzzDNSAnswer feeds the DNS server's decoder what a sandbox could send:
// it must never panic, answer only with a parsable message carrying the
// query's id, and never hand out an address the policy refuses.
func FuzzDNSAnswer(f *testing.F) {
	q := func(name string, typ dnsmessage.Type) []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
		b.StartQuestions()
		b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
		out, _ := b.Finish()
		return out
	}
	f.Add(q("allowed.test.", dnsmessage.TypeA))
	f.Add(q("rebind.test.", dnsmessage.TypeA))
	f.Add(q("other.test.", dnsmessage.TypeAAAA))
	f.Add(q("x.wild.test.", dnsmessage.TypeMX))
	f.Add([]byte{0, 1, 2})
	pol, err := netpolicy.Compile(api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test", "*.wild.test", "rebind.test"}})
	if err != nil {
		f.Fatal(err)
	}
	answers := map[string][]netip.Addr{
		"allowed.test": {netip.MustParseAddr("203.0.113.10")},
		"rebind.test":  {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("169.254.169.254")},
	}
	n := &Net{resolver: newCache(func(_ context.Context, host string) ([]netip.Addr, error) {
		return append(answers[host], netip.MustParseAddr("203.0.113.20")), nil
	})}
	n.policy.Store(pol)
	f.Fuzz(func(t *testing.T, req []byte) {
		resp, ok := n.answer(context.Background(), req, dnsMaxUDP)
		if !ok {
			return
		}
		if len(resp) > dnsMaxUDP {
			t.Fatalf("UDP answer of %d bytes", len(resp))
		}
		var p dnsmessage.Parser
		h, err := p.Start(resp)
		if err != nil {
			t.Fatalf("unparsable answer: %v", err)
		}
		var rh dnsmessage.Header
		if rh, err = (&dnsmessage.Parser{}).Start(req); err == nil && h.ID != rh.ID {
			t.Fatalf("answer id %d for query %d", h.ID, rh.ID)
		}
		qs, _ := p.AllQuestions()
		for {
			ah, err := p.AnswerHeader()
			if err != nil {
				break
			}
			if ah.Type != dnsmessage.TypeA {
				p.SkipAnswer()
				continue
			}
			a, err := p.AResource()
			if err != nil {
				t.Fatal(err)
			}
			ip := netip.AddrFrom4(a.A)
			name := ""
			if len(qs) == 1 {
				name = qs[0].Name.String()
				name = name[:len(name)-1]
			}
			if !pol.AllowIP(ip, name) {
				t.Fatalf("answered %s for %q, which the policy refuses", ip, name)
			}
		}
	})
}

func TestLastHostEnd(t *testing.T) {
	for pool, want := range map[string]string{"10.213.0.0/16": "10.213.255.253", "192.168.7.0/24": "192.168.7.253"} {
		if got := lastHostEnd(netip.MustParsePrefix(pool)); got.String() != want {
			t.Errorf("lastHostEnd(%s) = %s, want %s", pool, got, want)
		}
	}
}
