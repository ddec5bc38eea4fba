package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// netSocketsMain is the helper (see NetSocketsArg).
func netSocketsMain(args []string, stderr io.Writer) int {
	if err := sendNetSockets(args); err != nil {
		fmt.Fprintln(stderr, "agent net-sockets:", err)
		return 1
	}
	return 0
}

func sendNetSockets(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: net-sockets FD SPEC...")
	}
	out, err := strconv.Atoi(args[0])
	if err != nil || out < 3 {
		return fmt.Errorf("bad descriptor %q", args[0])
	}
	var fds []int
	for _, spec := range args[1:] {
		fd, err := netSocket(spec)
		if err != nil {
			return fmt.Errorf("%s: %w", spec, err)
		}
		fds = append(fds, fd)
	}
	return unix.Sendmsg(out, []byte{'s'}, unix.UnixRights(fds...), nil, 0)
}

// netSocket makes the socket of one spec and returns a descriptor of it.
func netSocket(spec string) (int, error) {
	if spec == "netfilter" {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	}
	proto, addr, _ := strings.Cut(spec, ":")
	var f interface{ File() (*os.File, error) }
	switch proto {
	case "tcp":
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			return -1, err
		}
		f = ln.(*net.TCPListener)
	case "udp":
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return -1, err
		}
		f = pc.(*net.UDPConn)
	default:
		return -1, fmt.Errorf("unknown socket kind %q", proto)
	}
	file, err := f.File() // a duplicate, blocking: the receiver sets its own mode
	if err != nil {
		return -1, err
	}
	return int(file.Fd()), nil
}
