//go:build !linux

package modbus

import (
	"errors"
	"os"
	"runtime"
	"syscall"
)

// openSerial is implemented on Linux only, the gateway's platform.
func openSerial(string, SerialConfig) (*os.File, error) {
	return nil, errors.New("serial: rtu and ascii lines are supported on linux only, not " + runtime.GOOS)
}

// quickAck is Linux only (TCP_QUICKACK).
func quickAck(syscall.RawConn) {}
