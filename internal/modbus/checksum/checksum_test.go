package checksum

import "testing"

// Vectors from the Modbus serial line guide and widely published examples.
func TestCRC16(t *testing.T) {
	cases := []struct {
		in   []byte
		want uint16
	}{
		{nil, 0xFFFF},
		{[]byte{0x01, 0x03, 0x00, 0x00, 0x00, 0x0A}, 0xCDC5}, // read 10 holding registers from unit 1
		{[]byte{0x02, 0x07}, 0x1241},                         // serial line guide, appendix B: 02 07 41 12
		{[]byte("123456789"), 0x4B37},                        // CRC-16/MODBUS check value
	}
	for _, c := range cases {
		if got := CRC16(c.in); got != c.want {
			t.Errorf("CRC16(% x) = %04x, want %04x", c.in, got, c.want)
		}
	}
}

func TestLRC(t *testing.T) {
	cases := []struct {
		in   []byte
		want byte
	}{
		{nil, 0x00},
		{[]byte{0x01, 0x03, 0x00, 0x00, 0x00, 0x0A}, 0xF2},
		{[]byte{0xF7, 0x03, 0x13, 0x89, 0x00, 0x0A}, 0x60}, // ":F7031389000A60"
	}
	for _, c := range cases {
		if got := LRC(c.in); got != c.want {
			t.Errorf("LRC(% x) = %02x, want %02x", c.in, got, c.want)
		}
		// The LRC makes the byte sum of the whole frame zero.
		var sum byte
		for _, b := range append(c.in, LRC(c.in)) {
			sum += b
		}
		if sum != 0 {
			t.Errorf("LRC(% x): frame sum %02x, want 0", c.in, sum)
		}
	}
}

func BenchmarkCRC16(b *testing.B) {
	frame := make([]byte, 256)
	for i := range frame {
		frame[i] = byte(i)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		CRC16(frame)
	}
}
