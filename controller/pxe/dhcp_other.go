//go:build !linux

package pxe

import (
	"context"
	"errors"
	"net"
)

// listenUDP4 needs SO_BINDTODEVICE, which only Linux has; elsewhere use
// DHCPServer.Serve with a socket of your own.
func listenUDP4(context.Context, string, int) (net.PacketConn, error) {
	return nil, errors.New("binding to an interface is supported on Linux only")
}
