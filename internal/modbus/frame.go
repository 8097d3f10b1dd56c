package modbus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/smelterio/smelter/internal/modbus/checksum"
)

// Request and reply framing of the three Modbus encodings the driver speaks
// (Modbus Application Protocol V1.1b3 and Modbus over Serial Line V1.02):
// MBAP on TCP, RTU (CRC-16) and ASCII (LRC). Replies are delimited by their
// content (function code and byte count), never by inter-character silence,
// so a reply is handed back the moment its last byte arrives; each reader
// checks the reply against what the request expects and says precisely why
// a reply is not the answer (*ReplyError).

const (
	mbapHeader = 7
	maxADU     = 520 // an ASCII frame of a full PDU is 513 characters
	maxPDU     = 253
)

// filler reads exactly len(p) bytes or fails.
type filler func(p []byte) error

// expect is what a reply must be to answer a request.
type expect struct {
	tid   uint16 // MBAP transaction id
	unit  byte
	fc    byte
	count int    // byte count of a read reply (functions 1-4); -1 when not checked
	echo  []byte // what a write reply's PDU must be (echoOf); nil for reads
}

// expectFor derives the expected reply of a request PDU.
func expectFor(unit byte, pdu []byte) expect {
	e := expect{unit: unit, fc: pdu[0], count: -1, echo: echoOf(pdu)}
	if len(pdu) >= 5 {
		qty := int(binary.BigEndian.Uint16(pdu[3:]))
		switch pdu[0] {
		case 1, 2:
			e.count = (qty + 7) / 8
		case 3, 4:
			e.count = 2 * qty
		}
	}
	return e
}

// readPDU builds the PDU of a read request of table t.
func readPDU(dst []byte, t Table, start, count uint16) []byte {
	fc := [...]byte{Coils: 1, DiscreteInputs: 2, HoldingRegisters: 3, InputRegisters: 4}[t]
	return append(dst, fc, byte(start>>8), byte(start), byte(count>>8), byte(count))
}

// appendRequest frames pdu for unit in the transport's encoding.
func appendRequest(dst []byte, tr Transport, tid uint16, unit byte, pdu []byte) []byte {
	switch tr {
	case TCP:
		dst = binary.BigEndian.AppendUint16(dst, tid)
		dst = append(dst, 0, 0)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(pdu)+1))
		dst = append(dst, unit)
		return append(dst, pdu...)
	case RTU, RTUOverTCP:
		start := len(dst)
		dst = append(dst, unit)
		dst = append(dst, pdu...)
		return binary.LittleEndian.AppendUint16(dst, checksum.CRC16(dst[start:]))
	}
	const hexdig = "0123456789ABCDEF"
	lrc := checksum.LRC(append([]byte{unit}, pdu...))
	dst = append(dst, ':', hexdig[unit>>4], hexdig[unit&15])
	for _, b := range pdu {
		dst = append(dst, hexdig[b>>4], hexdig[b&15])
	}
	return append(dst, hexdig[lrc>>4], hexdig[lrc&15], '\r', '\n')
}

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
	return 0, malformed("function code " + strconv.Itoa(int(fc)) + " has no known reply length")
}

// checkReply verifies that a reply frame (unit, function, ...) answers the
// request and returns its PDU. An exception reply is returned as the
// exception's Status.
func checkReply(frame []byte, want expect) ([]byte, error) {
	if frame[0] != want.unit {
		return nil, &ReplyError{Status: StatusWrongUnit, Want: int(want.unit), Got: int(frame[0])}
	}
	fc := frame[1]
	if fc != want.fc && fc != want.fc|0x80 {
		return nil, &ReplyError{Status: StatusWrongFunction, Want: int(want.fc), Got: int(fc)}
	}
	pdu := frame[1:]
	if fc&0x80 != 0 {
		if len(pdu) != 2 || pdu[1] == 0 {
			return nil, malformed("exception reply without a code")
		}
		return nil, Status(pdu[1])
	}
	if want.count >= 0 && (len(pdu) < 2 || int(pdu[1]) != want.count || len(pdu) != 2+want.count) {
		got := -1
		if len(pdu) >= 2 {
			got = int(pdu[1])
		}
		return nil, &ReplyError{Status: StatusBadLength, Want: want.count, Got: got}
	}
	if want.echo != nil && !bytes.Equal(pdu, want.echo) {
		return nil, &ReplyError{Status: StatusBadEcho, Detail: fmt.Sprintf("reply % X to request % X", pdu, want.echo)}
	}
	return pdu, nil
}

// readRTU reads one RTU reply into buf, checks its CRC and that it answers
// the request, and returns its PDU.
func readRTU(rd filler, buf []byte, want expect) ([]byte, error) {
	if err := rd(buf[:3]); err != nil {
		return nil, err
	}
	n, err := replyLen(buf[1], buf[2])
	if err != nil {
		return nil, err
	}
	if n+2 > len(buf) {
		return nil, malformed("reply of " + strconv.Itoa(n+2) + " bytes too long")
	}
	if err := rd(buf[3 : n+2]); err != nil {
		return nil, err
	}
	frame := buf[:n+2]
	if got, sum := binary.LittleEndian.Uint16(frame[n:]), checksum.CRC16(frame[:n]); got != sum {
		return nil, &ReplyError{Status: StatusChecksum, Want: int(sum), Got: int(got)}
	}
	return checkReply(frame[:n], want)
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
			return malformed(strconv.Quote(string(src[2*i:2*i+2])) + " is not hex")
		}
		dst[i] = hi<<4 | lo
	}
	return nil
}

// readASCII reads one ASCII reply (":" hex... LRC CR LF) into buf, skipping
// any noise before the colon, checks its LRC and that it answers the
// request, and returns its PDU (decoded, in buf).
func readASCII(rd filler, buf []byte, want expect) ([]byte, error) {
	for skipped := 0; ; skipped++ {
		if skipped > maxADU {
			return nil, malformed("no start of frame")
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
		return nil, malformed("reply of " + strconv.Itoa(total) + " characters too long")
	}
	if err := rd(buf[7:total]); err != nil {
		return nil, err
	}
	frame := buf[:total]
	if frame[total-2] != '\r' || frame[total-1] != '\n' {
		return nil, malformed("frame does not end in CR LF")
	}
	// decode in place: the binary frame is shorter than its hex
	bin := buf[:n+1]
	for i := range bin {
		if err := decodeHex(bin[i:i+1], frame[1+2*i:3+2*i]); err != nil {
			return nil, err
		}
	}
	if got, sum := bin[n], checksum.LRC(bin[:n]); got != sum {
		return nil, &ReplyError{Status: StatusChecksum, Want: int(sum), Got: int(got)}
	}
	return checkReply(bin[:n], want)
}

// readMBAP reads one Modbus TCP reply into buf and returns its PDU. A reply
// with another transaction id (a late answer to an earlier request, bytes
// left over from another session) answers something else: it is skipped and
// reported to skip with its size, up to 4 of them. When the right reply
// never comes, the mismatch is the cause: a StatusTransactionMismatch naming
// both ids, not a bare timeout.
func readMBAP(rd filler, buf []byte, want expect, skip func(frame []byte)) ([]byte, error) {
	var mismatch error
	for range 5 {
		if err := rd(buf[:mbapHeader]); err != nil {
			if mismatch != nil && errors.Is(err, StatusTimeout) {
				return nil, mismatch
			}
			return nil, err
		}
		if pid := binary.BigEndian.Uint16(buf[2:]); pid != 0 {
			return nil, malformed("mbap protocol id " + strconv.Itoa(int(pid)))
		}
		length := int(binary.BigEndian.Uint16(buf[4:]))
		if length < 3 || length > maxPDU+1 {
			return nil, malformed("mbap length " + strconv.Itoa(length))
		}
		frame := buf[:mbapHeader-1+length]
		if err := rd(frame[mbapHeader:]); err != nil {
			if mismatch != nil && errors.Is(err, StatusTimeout) {
				return nil, mismatch
			}
			return nil, err
		}
		if tid := binary.BigEndian.Uint16(frame); tid != want.tid {
			skip(frame)
			if mismatch == nil {
				mismatch = &ReplyError{Status: StatusTransactionMismatch, Want: int(want.tid), Got: int(tid)}
			}
			continue
		}
		return checkReply(frame[6:], want)
	}
	return nil, mismatch
}
