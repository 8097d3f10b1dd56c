//go:build unix

package modbus

import (
	"errors"
	"io"
	"syscall"
)

// drainNow reads and discards whatever input is already pending on p,
// without waiting, and returns how many bytes it discarded. p's descriptor
// is non-blocking (sockets, and serial lines from openSerial).
func drainNow(p port, buf []byte) (int, error) {
	rc, err := p.SyscallConn()
	if err != nil {
		return 0, err
	}
	total := 0
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, rerr = syscall.Read(int(fd), buf)
			return true
		}); err != nil {
			return total, err
		}
		switch {
		case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EINTR):
			return total, nil
		case rerr != nil:
			return total, rerr
		case n == 0:
			return total, io.EOF
		}
		total += n
	}
}
