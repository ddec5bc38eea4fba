package api

import "testing"

func TestNetworkDenialTarget(t *testing.T) {
	for _, c := range []struct {
		d    NetworkDenial
		want string
	}{
		{NetworkDenial{Host: "other.test", IP: "203.0.113.7"}, "other.test"},
		{NetworkDenial{IP: "10.0.0.5", Port: 5432, Protocol: "tcp"}, "tcp to 10.0.0.5:5432"},
		{NetworkDenial{IP: "10.213.0.1", Protocol: "icmp"}, "icmp to 10.213.0.1"},
		{NetworkDenial{IP: "169.254.169.254"}, "169.254.169.254"},
	} {
		if got := c.d.Target(); got != c.want {
			t.Errorf("%+v: Target() = %q, want %q", c.d, got, c.want)
		}
	}
}
