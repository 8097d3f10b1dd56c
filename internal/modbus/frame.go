package modbus

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/smelterio/smelter/internal/modbus/checksum"
)

// Frame reading for the transporter. Responses are delimited by their
// content (function code and byte count), never by inter-character silence,
// so a reply is handed back the moment its last byte arrives.

const (
	mbapHeader = 7
	maxADU     = 520 // an ASCII frame of a full PDU is 513 characters
)

// filler reads exactly len(p) bytes or fails.
type filler func(p []byte) error

var errFrame = errors.New("malformed frame")

// replyLen returns the length of a reply frame (unit, function, ..., without
// checksum) from its first three bytes.
func replyLen(fc, third byte) (int, error) {
	if fc&0x80 != 0 {
		return 3, nil // unit, function|0x80, exception code
	}
	switch fc {
	case 1, 2, 3, 4, 23:
		return 3 + int(third), nil
	case 5, 6, 15, 16:
		return 6, nil
	case 22:
		return 8, nil
	}
	return 0, fmt.Errorf("%w: function code %d has no known reply length", errFrame, fc)
}

// checkReply verifies that a reply (unit, function, ...) answers the request.
func checkReply(frame []byte, unit, fc byte) error {
	if frame[0] != unit {
		return fmt.Errorf("%w: reply from unit %d to a request for unit %d", errFrame, frame[0], unit)
	}
	if frame[1] != fc && frame[1] != fc|0x80 {
		return fmt.Errorf("%w: reply function %d to request function %d", errFrame, frame[1], fc)
	}
	return nil
}

// readRTU reads one RTU reply into buf and checks CRC, unit and function.
func readRTU(rd filler, buf []byte, unit, fc byte) ([]byte, error) {
	if err := rd(buf[:3]); err != nil {
		return nil, err
	}
	n, err := replyLen(buf[1], buf[2])
	if err != nil {
		return nil, err
	}
	if n+2 > len(buf) {
		return nil, fmt.Errorf("%w: reply of %d bytes too long", errFrame, n+2)
	}
	if err := rd(buf[3 : n+2]); err != nil {
		return nil, err
	}
	frame := buf[:n+2]
	if got, want := binary.LittleEndian.Uint16(frame[n:]), checksum.CRC16(frame[:n]); got != want {
		return nil, fmt.Errorf("%w: crc %04x, want %04x", errFrame, got, want)
	}
	if err := checkReply(frame, unit, fc); err != nil {
		return nil, err
	}
	return frame, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// decodeHex decodes pairs of hex characters from src into dst (len(src) = 2*len(dst)).
func decodeHex(dst, src []byte) error {
	for i := range dst {
		hi, ok1 := unhex(src[2*i])
		lo, ok2 := unhex(src[2*i+1])
		if !ok1 || !ok2 {
			return fmt.Errorf("%w: %q is not hex", errFrame, src[2*i:2*i+2])
		}
		dst[i] = hi<<4 | lo
	}
	return nil
}

// readASCII reads one ASCII reply (":" hex... LRC CR LF) into buf, skipping
// any noise before the colon, and checks LRC, unit and function. It returns
// the frame as received, from the colon to the line feed.
func readASCII(rd filler, buf []byte, unit, fc byte) ([]byte, error) {
	for skipped := 0; ; skipped++ {
		if skipped > maxADU {
			return nil, fmt.Errorf("%w: no start of frame", errFrame)
		}
		if err := rd(buf[:1]); err != nil {
			return nil, err
		}
		if buf[0] == ':' {
			break
		}
	}
	if err := rd(buf[1:7]); err != nil {
		return nil, err
	}
	var head [3]byte
	if err := decodeHex(head[:], buf[1:7]); err != nil {
		return nil, err
	}
	n, err := replyLen(head[1], head[2])
	if err != nil {
		return nil, err
	}
	total := 1 + 2*(n+1) + 2 // colon, hex of frame and LRC, CR LF
	if total > len(buf) {
		return nil, fmt.Errorf("%w: reply of %d characters too long", errFrame, total)
	}
	if err := rd(buf[7:total]); err != nil {
		return nil, err
	}
	frame := buf[:total]
	if frame[total-2] != '\r' || frame[total-1] != '\n' {
		return nil, fmt.Errorf("%w: frame does not end in CR LF", errFrame)
	}
	var binBuf [260]byte // n <= 258
	bin := binBuf[:n+1]
	if err := decodeHex(bin, frame[1:total-2]); err != nil {
		return nil, err
	}
	if got, want := bin[n], checksum.LRC(bin[:n]); got != want {
		return nil, fmt.Errorf("%w: lrc %02x, want %02x", errFrame, got, want)
	}
	if err := checkReply(bin, unit, fc); err != nil {
		return nil, err
	}
	return frame, nil
}

// readMBAP reads one Modbus TCP reply into buf. A reply whose transaction id
// is not tid (a stale answer to an earlier request) is skipped; up to 4 are
// tolerated before the stream is declared out of step.
func readMBAP(rd filler, buf []byte, tid uint16, unit, fc byte) ([]byte, error) {
	for range 5 {
		if err := rd(buf[:mbapHeader]); err != nil {
			return nil, err
		}
		if pid := binary.BigEndian.Uint16(buf[2:]); pid != 0 {
			return nil, fmt.Errorf("%w: protocol id %d", errFrame, pid)
		}
		length := int(binary.BigEndian.Uint16(buf[4:]))
		if length < 3 || mbapHeader-1+length > len(buf) || length > 254 {
			return nil, fmt.Errorf("%w: mbap length %d", errFrame, length)
		}
		frame := buf[:mbapHeader-1+length]
		if err := rd(frame[mbapHeader:]); err != nil {
			return nil, err
		}
		if binary.BigEndian.Uint16(frame) != tid {
			continue
		}
		if err := checkReply(frame[6:], unit, fc); err != nil {
			return nil, err
		}
		return frame, nil
	}
	return nil, fmt.Errorf("%w: replies out of step with requests", errFrame)
}
