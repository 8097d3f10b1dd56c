//go:build !unix

package modbus

import (
	"errors"
	"net"
	"time"
)

// drainer discards input that arrives within a millisecond (no
// non-blocking read outside unix).
type drainer struct {
	p   port
	buf [256]byte
}

func newDrainer(p port) (*drainer, error) { return &drainer{p: p}, nil }

func (d *drainer) drain() (int, error) {
	total := 0
	for {
		_ = d.p.SetDeadline(time.Now().Add(time.Millisecond))
		n, err := d.p.Read(d.buf[:])
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
