//go:build !linux

package egress

import (
	"errors"
	"net"
	"net/netip"
)

// OriginalDst needs Linux conntrack (SO_ORIGINAL_DST); elsewhere it returns
// errors.ErrUnsupported.
func OriginalDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.ErrUnsupported
}
