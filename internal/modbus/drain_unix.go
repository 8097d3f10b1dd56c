//go:build unix

package modbus

import (
	"errors"
	"io"
	"syscall"
)

// drainer reads and discards whatever input is already pending on a port,
// without waiting. The port's descriptor is non-blocking (sockets, and
// serial lines from openSerial). Made once per connection: drain allocates
// nothing.
type drainer struct {
	rc  syscall.RawConn
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

func newDrainer(p port) (*drainer, error) {
	rc, err := p.SyscallConn()
	if err != nil {
		return nil, err
	}
	d := &drainer{rc: rc, buf: make([]byte, 256)}
	d.fn = func(fd uintptr) bool {
		d.n, d.err = syscall.Read(int(fd), d.buf)
		return true
	}
	return d, nil
}

// drain returns how many bytes it discarded; io.EOF when the peer closed.
func (d *drainer) drain() (int, error) {
	total := 0
	for {
		if err := d.rc.Read(d.fn); err != nil {
			return total, err
		}
		switch {
		case errors.Is(d.err, syscall.EAGAIN):
			return total, nil
		case errors.Is(d.err, syscall.EINTR):
			continue
		case d.err != nil:
			return total, d.err
		case d.n == 0:
			return total, io.EOF
		}
		total += d.n
	}
}
