//go:build !unix

package modbus

import (
	"errors"
	"net"
	"time"
)

// drainNow reads and discards input that arrives within a millisecond.
func drainNow(p port, buf []byte) (int, error) {
	total := 0
	for {
		_ = p.SetDeadline(time.Now().Add(time.Millisecond))
		n, err := p.Read(buf)
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
