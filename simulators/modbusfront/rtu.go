package modbusfront

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/modbus/checksum"
	"github.com/smelterio/smelter/simulators/regmap"
)

// RTU over TCP: Modbus RTU frames (unit, function, data, CRC-16) carried on a
// TCP stream, as serial-to-Ethernet converters do. The stream has no length
// field, so a request's length follows from its function code.

var (
	errRTUFunction = errors.New("rtu: function code cannot be framed")
	errRTUCRC      = errors.New("rtu: bad crc")
)

const rtuMaxFrame = 256

// rtuRequest is one decoded request frame.
type rtuRequest struct {
	unit, fc  byte
	addr, qty uint16
}

// parseRTURequest decodes the request frame at the start of b. It returns
// n = 0 and no error when b holds only part of a frame; on errRTUCRC n is the
// bad frame's length (to skip it).
func parseRTURequest(b []byte) (req rtuRequest, n int, err error) {
	if len(b) < 2 {
		return req, 0, nil
	}
	req.unit, req.fc = b[0], b[1]
	switch req.fc {
	case 1, 2, 3, 4, 5, 6:
		n = 8
	case 15, 16:
		if len(b) < 7 {
			return req, 0, nil
		}
		n = 9 + int(b[6])
	default:
		return req, 0, errRTUFunction
	}
	if len(b) < n {
		return req, 0, nil
	}
	if checksum.CRC16(b[:n-2]) != uint16(b[n-2])|uint16(b[n-1])<<8 {
		return req, n, errRTUCRC
	}
	req.addr = uint16(b[2])<<8 | uint16(b[3])
	req.qty = uint16(b[4])<<8 | uint16(b[5])
	return req, n, nil
}

// appendCRC appends the Modbus RTU CRC, low byte first.
func appendCRC(b []byte) []byte {
	c := checksum.CRC16(b)
	return append(b, byte(c), byte(c>>8))
}

type rtuServer struct {
	ln    net.Listener
	f     *Front
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newRTUServer(ln net.Listener, f *Front) *rtuServer {
	return &rtuServer{ln: ln, f: f, conns: map[net.Conn]struct{}{}}
}

func (s *rtuServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.f.log.Warn("rtu accept", "err", err)
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *rtuServer) dropConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

func (s *rtuServer) close() {
	s.ln.Close()
	s.dropConns()
	s.wg.Wait()
}

// handle serves one connection: one request at a time, buffers reused.
func (s *rtuServer) handle(c net.Conn) {
	var in [2 * rtuMaxFrame]byte
	out := make([]byte, 0, rtuMaxFrame+8)
	start, end := 0, 0
	for {
		req, n, err := parseRTURequest(in[start:end])
		if n == 0 && err == nil {
			if start > 0 {
				end = copy(in[:], in[start:end])
				start = 0
			}
			if end == len(in) { // cannot happen with valid framing; resync
				end = 0
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Minute))
			m, err := c.Read(in[end:])
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					s.f.log.Debug("rtu read", "err", err)
				}
				return
			}
			end += m
			continue
		}
		switch {
		case errors.Is(err, errRTUCRC):
			s.f.log.Debug("rtu frame with bad crc skipped", "remote", c.RemoteAddr())
			start += n
			continue
		case errors.Is(err, errRTUFunction):
			// unknown length: drop what we have and answer "illegal function"
			start, end = 0, 0
			out = appendCRC(append(out[:0], req.unit, req.fc|0x80, 1))
			if _, err := c.Write(out); err != nil {
				return
			}
			continue
		}
		start += n
		resp := s.respond(out[:0], req)
		if resp == nil {
			continue // silent device, broadcast or unknown unit: no reply
		}
		out = resp
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// respond builds the reply to req into out, or returns nil for no reply.
func (s *rtuServer) respond(out []byte, req rtuRequest) []byte {
	if req.unit == 0 {
		return nil // broadcast
	}
	d := s.f.units[req.unit]
	if d == nil {
		return nil
	}
	exc := func(code byte) []byte { return appendCRC(append(out, req.unit, req.fc|0x80, code)) }
	var t regmap.Table
	limit := uint16(125)
	switch req.fc {
	case 1:
		t, limit = regmap.Coil, 2000
	case 2:
		t, limit = regmap.Discrete, 2000
	case 3:
		t = regmap.Holding
	case 4:
		t = regmap.Input
	default: // writes: the simulated devices are read-only
		d.refuse()
		return exc(byte(IllegalFunction))
	}
	if req.qty == 0 || req.qty > limit {
		d.refuse()
		return exc(byte(IllegalDataValue))
	}
	if int(req.addr)+int(req.qty) > 0x10000 {
		return exc(byte(IllegalDataAddress))
	}
	img, silent, code := d.access(s.f.done, t, req.addr, req.qty, false)
	if silent {
		return nil
	}
	if code != 0 {
		return exc(byte(code))
	}
	out = append(out, req.unit, req.fc)
	if t == regmap.Holding || t == regmap.Input {
		regs := registers(img, t, req.addr, req.qty)
		out = append(out, byte(2*len(regs)))
		for _, r := range regs {
			out = append(out, byte(r>>8), byte(r))
		}
		return appendCRC(out)
	}
	bs := bits(img, t, req.addr, req.qty)
	nb := (len(bs) + 7) / 8
	out = append(out, byte(nb))
	for i := range nb {
		var x byte
		for j := range 8 {
			if k := 8*i + j; k < len(bs) && bs[k] {
				x |= 1 << j
			}
		}
		out = append(out, x)
	}
	return appendCRC(out)
}
