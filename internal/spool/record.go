package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// On-disk record framing (little endian), 32-byte header then the body:
//
//	0  magic    uint32  "SMLR"
//	4  bodyLen  uint32  len(subject) + len(data)
//	8  crc      uint32  CRC32C of bytes 12 .. end of body
//	12 subjLen  uint16
//	14 flags    uint16  reserved, 0
//	16 seq      uint64
//	24 appended int64   unix ms
//	32 subject, data
//
// The magic lets recovery find the next record after garbage; the CRC covers
// every field except the magic and length (a wrong length shows up as a wrong
// CRC or a record that runs past the file).
const (
	headerSize = 32
	maxBody    = 64 << 20
	maxSubject = 1<<16 - 1
	recMagic   = uint32('S') | uint32('M')<<8 | uint32('L')<<16 | uint32('R')<<24
)

var (
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
	magicBytes  = []byte("SMLR")
	errShort    = errors.New("spool: record truncated")
	errCorrupt  = errors.New("spool: corrupt record")
	errTooLarge = errors.New("spool: record too large")
)

type rawRecord struct {
	seq      uint64
	appended int64
	subject  []byte
	data     []byte
}

// sealRecord fills the header of rec, whose body (subject then data) is
// already in place after headerSize bytes.
func sealRecord(rec []byte, seq uint64, appended int64, subjLen int) {
	le := binary.LittleEndian
	le.PutUint32(rec[0:], recMagic)
	le.PutUint32(rec[4:], uint32(len(rec)-headerSize))
	le.PutUint16(rec[12:], uint16(subjLen))
	le.PutUint16(rec[14:], 0)
	le.PutUint64(rec[16:], seq)
	le.PutUint64(rec[24:], uint64(appended))
	le.PutUint32(rec[8:], crc32.Checksum(rec[12:], castagnoli))
}

// decodeRecord decodes the record at the start of b and returns it with its
// encoded size. errShort means b ends inside what may be a valid record;
// errCorrupt means no valid record starts at b[0].
func decodeRecord(b []byte) (rawRecord, int, error) {
	if len(b) < headerSize {
		if len(b) >= 4 && !bytes.Equal(b[:4], magicBytes) {
			return rawRecord{}, 0, errCorrupt
		}
		return rawRecord{}, 0, errShort
	}
	le := binary.LittleEndian
	if le.Uint32(b) != recMagic {
		return rawRecord{}, 0, errCorrupt
	}
	bodyLen := int(le.Uint32(b[4:]))
	subjLen := int(le.Uint16(b[12:]))
	if bodyLen > maxBody || subjLen > bodyLen || le.Uint16(b[14:]) != 0 {
		return rawRecord{}, 0, errCorrupt
	}
	n := headerSize + bodyLen
	if len(b) < n {
		return rawRecord{}, 0, errShort
	}
	if crc32.Checksum(b[12:n], castagnoli) != le.Uint32(b[8:]) {
		return rawRecord{}, 0, errCorrupt
	}
	return rawRecord{
		seq:      le.Uint64(b[16:]),
		appended: int64(le.Uint64(b[24:])),
		subject:  b[headerSize : headerSize+subjLen],
		data:     b[headerSize+subjLen : n],
	}, n, nil
}

// recordBodyLen returns the body length announced by a header that passed the
// magic check, for sizing a read buffer.
func recordBodyLen(b []byte) int { return int(binary.LittleEndian.Uint32(b[4:])) }

// resync returns the offset of the next valid record in b at or after from,
// or -1 when there is none. When atEOF is false, b is a window of a longer
// file and a candidate that runs past the end of b yields its offset with
// short = true (the caller reads more); when atEOF is true such a candidate
// cannot be complete and the search goes on past it.
func resync(b []byte, from int, atEOF bool) (off int, short bool) {
	for i := from; i < len(b); {
		j := bytes.Index(b[i:], magicBytes)
		if j < 0 {
			return -1, false
		}
		i += j
		_, _, err := decodeRecord(b[i:])
		switch {
		case err == nil:
			return i, false
		case errors.Is(err, errShort):
			if !atEOF {
				return i, true
			}
		}
		i++
	}
	return -1, false
}
