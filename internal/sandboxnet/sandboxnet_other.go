//go:build !linux

package sandboxnet

import (
	"fmt"
	"net/netip"
	"runtime"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// supported: network namespaces, veths, nftables and nfnetlink_log are
// Linux's; Available, Create and Recover refuse elsewhere.
func supported() error {
	return api.Errorf(api.ErrUnsupported, "sandbox networks need Linux (network namespaces, nftables), not %s", runtime.GOOS)
}

// portsFree cannot probe outside Linux (no IP_FREEBIND); unused, since
// supported refuses first.
func portsFree(netip.Addr) bool { return false }

// packetLog stands in for the nfnetlink_log socket of nflog_linux.go.
type packetLog struct {
	report func(api.NetworkDenial)
}

func openPacketLogFrom(uint16) (*packetLog, uint16, error) {
	return nil, 0, fmt.Errorf("nfnetlink_log: %w", supported())
}

func (*packetLog) run()   {}
func (*packetLog) flush() {}
func (*packetLog) close() {}
