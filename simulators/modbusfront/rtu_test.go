package modbusfront

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/checksum"
)

func TestCRC16KnownVector(t *testing.T) {
	// read holding registers unit 1, address 0, count 10: 01 03 00 00 00 0A C5 CD
	if got := appendCRC([]byte{1, 3, 0, 0, 0, 10}); !bytes.Equal(got, []byte{1, 3, 0, 0, 0, 10, 0xC5, 0xCD}) {
		t.Fatalf("crc frame % X", got)
	}
}

func TestParseRTURequest(t *testing.T) {
	good := appendCRC([]byte{5, 3, 0, 8, 0, 2})
	for _, tc := range []struct {
		name string
		in   []byte
		n    int
		err  error
	}{
		{"empty", nil, 0, nil},
		{"partial", good[:5], 0, nil},
		{"good", good, 8, nil},
		{"good plus next", append(append([]byte{}, good...), 1, 3), 8, nil},
		{"bad crc", append(append([]byte{}, good[:7]...), good[7]^1), 8, errRTUCRC},
		{"write multiple partial", []byte{1, 16, 0, 0, 0, 2}, 0, nil},
		{"write multiple", appendCRC([]byte{1, 16, 0, 0, 0, 2, 4, 0, 1, 0, 2}), 13, nil},
		{"unknown function", []byte{1, 43, 14, 1}, 0, errRTUFunction},
	} {
		req, n, err := parseRTURequest(tc.in)
		if n != tc.n || !errors.Is(err, tc.err) {
			t.Errorf("%s: n=%d err=%v, want %d %v", tc.name, n, err, tc.n, tc.err)
		}
		if tc.name == "good" && (req.unit != 5 || req.fc != 3 || req.addr != 8 || req.qty != 2) {
			t.Errorf("decoded %+v", req)
		}
	}
}

func FuzzParseRTURequest(f *testing.F) {
	f.Add(appendCRC([]byte{5, 3, 0, 8, 0, 2}))
	f.Add(appendCRC([]byte{1, 16, 0, 0, 0, 2, 4, 0, 1, 0, 2}))
	f.Add([]byte{1, 43, 14, 1})
	f.Add([]byte{1, 15, 0, 0, 0, 9, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, n, err := parseRTURequest(b)
		if n < 0 || n > len(b) {
			t.Fatalf("n=%d for %d bytes", n, len(b))
		}
		if err == nil && n > 0 {
			if req.unit != b[0] || req.fc != b[1] || checksum.CRC16(b[:n-2]) != uint16(b[n-2])|uint16(b[n-1])<<8 {
				t.Fatalf("accepted a frame with a bad crc: % X", b[:n])
			}
		}
	})
}

// TestRTUOverTCPFraming talks raw RTU frames to an RTU-over-TCP front: a
// reply with a good CRC, a bad-CRC frame ignored (as a serial slave does),
// several frames in one TCP segment, and an exception for an unframeable
// function, a write and an oversized read.
func TestRTUOverTCPFraming(t *testing.T) {
	dev := NewDevice(nil, nil)
	dev.Publish(testImage())
	f := startFront(t, Config{Address: "127.0.0.1:0", Transport: RTUOverTCP}, Unit{ID: 7, Device: dev})
	conn, err := net.Dial("tcp", f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	req := appendCRC([]byte{7, 3, 0, 0, 0, 3})
	bad := append([]byte{}, req...)
	bad[7] ^= 0xFF
	other := appendCRC([]byte{9, 3, 0, 0, 0, 3}) // no such unit: silence
	// bad frame, unknown unit, then two good frames in a single write
	conn.Write(append(append(append(bad, other...), req...), req...))
	for range 2 {
		resp := make([]byte, 11)
		if _, err := io.ReadFull(conn, resp); err != nil {
			t.Fatal(err)
		}
		want := appendCRC([]byte{7, 3, 6, 0, 100, 0, 101, 0, 102})
		if !bytes.Equal(resp, want) {
			t.Fatalf("response % X, want % X", resp, want)
		}
	}
	conn.Write([]byte{7, 43, 14, 1, 0})
	resp := make([]byte, 5)
	if _, err := io.ReadFull(conn, resp); err != nil {
		t.Fatal(err)
	}
	if resp[1] != 43|0x80 || resp[2] != 1 {
		t.Errorf("unknown function answered % X", resp)
	}
	// a write is refused with illegal function, a huge read with illegal value
	conn.Write(appendCRC([]byte{7, 6, 0, 0, 0, 1}))
	io.ReadFull(conn, resp)
	if resp[1] != 6|0x80 || resp[2] != 1 {
		t.Errorf("write answered % X", resp)
	}
	conn.Write(appendCRC([]byte{7, 3, 0, 0, 0, 200}))
	io.ReadFull(conn, resp)
	if resp[1] != 3|0x80 || resp[2] != 3 {
		t.Errorf("200-register read answered % X", resp)
	}
	// coils come packed LSB first: 1 0 1 0 0 0 0 0 | 1
	conn.Write(appendCRC([]byte{7, 1, 0, 0, 0, 9}))
	coils := make([]byte, 7)
	if _, err := io.ReadFull(conn, coils); err != nil {
		t.Fatal(err)
	}
	if want := appendCRC([]byte{7, 1, 2, 0x05, 0x01}); !bytes.Equal(coils, want) {
		t.Errorf("coils % X, want % X", coils, want)
	}
}
