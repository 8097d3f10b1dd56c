//go:build !unix

package modbus

import (
	"errors"
	"io"
	"net"
	"time"
)

// drainer discards input that arrives within a millisecond (no
// non-blocking read outside unix); writeRead and recv are the port's
// Write and Read.
type drainer struct {
	p     port
	buf   [256]byte
	head  [mbapHeader]byte // the first bytes the last drain discarded
	nhead int
}

func newDrainer(p port) (*drainer, error) { return &drainer{p: p}, nil }

func (d *drainer) drain() (int, error) {
	total := 0
	d.nhead = 0
	for {
		_ = d.p.SetDeadline(time.Now().Add(time.Millisecond))
		n, err := d.p.Read(d.buf[:])
		d.nhead += copy(d.head[d.nhead:], d.buf[:n])
		total += n
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// writeRead writes req, then reads what is available into buf (at least
// a byte, io.EOF or an error).
func (d *drainer) writeRead(req, buf []byte) (wrote, n int, werr, rerr error) {
	if wrote, werr = d.p.Write(req); werr != nil {
		return wrote, 0, werr, nil
	}
	n, rerr = d.recv(buf)
	return wrote, n, nil, rerr
}

// recv reads what is available into buf, waiting for at least a byte.
func (d *drainer) recv(buf []byte) (int, error) {
	for {
		n, err := d.p.Read(buf)
		if n > 0 || err != nil {
			if n > 0 {
				err = nil
			}
			if err == nil && n == 0 {
				err = io.EOF
			}
			return n, err
		}
	}
}
