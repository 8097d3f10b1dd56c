//go:build unix

package modbus

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// drainer does a port's reads that bypass its Read: it discards whatever
// input is already pending without waiting (drain), and it sends a request
// and reads its reply with one wait of the runtime's poller and no read
// before the reply can have come (writeRead, recv). The port's descriptor
// is non-blocking (sockets, and serial lines from openSerial). Made once
// per connection: its methods allocate nothing.
type drainer struct {
	rc  syscall.RawConn
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
	// the first bytes the last drain discarded (a Modbus TCP frame's
	// header tells whose reply it was)
	head  [mbapHeader]byte
	nhead int

	// writeRead and recv
	out   []byte // request bytes not yet written
	wrote int
	in    []byte
	werr  error
	rwFn  func(fd uintptr) bool
	rdFn  func(fd uintptr) bool
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
	d.rdFn = func(fd uintptr) bool {
		for {
			d.n, d.err = syscall.Read(int(fd), d.in)
			switch {
			case errors.Is(d.err, syscall.EINTR):
				continue
			case errors.Is(d.err, syscall.EAGAIN):
				return false // wait for the poller
			}
			return true
		}
	}
	d.rwFn = func(fd uintptr) bool {
		if len(d.out) == 0 {
			return d.rdFn(fd)
		}
		for len(d.out) > 0 {
			n, err := syscall.Write(int(fd), d.out)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return true // the send buffer is full: the caller writes the rest
			case err != nil:
				d.werr = os.NewSyscallError("write", err)
				return true
			}
			d.wrote += n
			d.out = d.out[n:]
		}
		// The request is out. RawConn.Read cleared the poller's readiness
		// before calling us, so whatever arrives from now on (the reply
		// included) wakes the wait: no read can find the reply already
		// there, and none is spent before it can have come.
		return false
	}
	return d, nil
}

// drain returns how many bytes it discarded; io.EOF when the peer closed.
func (d *drainer) drain() (int, error) {
	total := 0
	d.nhead = 0
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
		d.nhead += copy(d.head[d.nhead:], d.buf[:d.n])
		total += d.n
	}
}

// writeRead writes req, then waits until input arrives and reads what is
// available into buf. wrote is how much of req was written: less than
// len(req) with werr nil when the socket's send buffer is full (then n is
// 0 and nothing was read: the caller writes the rest and reads with recv),
// or with werr the write's error. With all of req written, n and rerr are
// recv's. rerr includes the poller's deadline error (the port's deadline).
func (d *drainer) writeRead(req, buf []byte) (wrote, n int, werr, rerr error) {
	d.out, d.wrote, d.werr, d.in, d.n, d.err = req, 0, nil, buf, 0, nil
	err := d.rc.Read(d.rwFn)
	d.out, d.in = nil, nil
	if d.werr != nil || d.wrote < len(req) {
		if d.werr == nil && err != nil {
			return d.wrote, 0, err, nil
		}
		return d.wrote, 0, d.werr, nil
	}
	n, rerr = d.result(err)
	return d.wrote, n, nil, rerr
}

// recv waits until input arrives and reads what is available into buf:
// n > 0, or io.EOF when the peer closed, or the error (the poller's
// deadline error when the port's deadline passed).
func (d *drainer) recv(buf []byte) (int, error) {
	d.in, d.n, d.err = buf, 0, nil
	err := d.rc.Read(d.rdFn)
	d.in = nil
	return d.result(err)
}

func (d *drainer) result(err error) (int, error) {
	switch {
	case err != nil:
		return 0, err
	case d.err != nil:
		return 0, os.NewSyscallError("read", d.err)
	case d.n == 0:
		return 0, io.EOF
	}
	return d.n, nil
}
