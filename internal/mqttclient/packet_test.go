package mqttclient

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// chunked reads at most n bytes per call.
type chunked struct {
	r io.Reader
	n int
}

func (c chunked) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func TestPublishRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		topic   string
		payload int
		qos     byte
		retain  bool
		dup     bool
	}{
		{"a", 0, 0, false, false},
		{"smelter/v1/plant/motor/m-1/data", 10 * 1024, 1, true, false},
		{"x/y", 127 - 5, 1, false, true},
		{"x/y", 200000, 1, false, false},
	} {
		payload := bytes.Repeat([]byte{0xa5}, tc.payload)
		b := appendPublishHeader(nil, tc.topic, 42, len(payload), tc.qos, tc.retain, tc.dup)
		b = append(b, payload...)
		if len(b) != PublishSize(tc.topic, len(payload), tc.qos) {
			t.Fatalf("%d bytes, PublishSize %d", len(b), PublishSize(tc.topic, len(payload), tc.qos))
		}
		rd := &reader{r: bufio.NewReader(chunked{bytes.NewReader(b), 3}), max: len(b)}
		p, err := rd.read()
		if err != nil {
			t.Fatal(err)
		}
		m, err := parsePublish(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.topic) != tc.topic || !bytes.Equal(m.payload, payload) || m.qos != tc.qos || m.retain != tc.retain || m.dup != tc.dup || (tc.qos > 0 && m.id != 42) {
			t.Fatalf("%+v: decoded topic %s qos %d retain %v dup %v id %d", tc, m.topic, m.qos, m.retain, m.dup, m.id)
		}
		rd.max = len(b) - 1
		rd.r = bufio.NewReader(bytes.NewReader(b))
		if _, err := rd.read(); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("one byte over the limit: %v", err)
		}
	}
}

// TestConnectGolden: the CONNECT of the uplink, byte for byte (MQTT 3.1.1
// section 3.1).
func TestConnectGolden(t *testing.T) {
	p := connectPacket{clientID: "gw", username: "u", password: []byte("p"), hasPassword: true, keepalive: 30,
		will: &Will{Topic: "s", Payload: []byte("off"), QoS: 1, Retain: true}}
	want := []byte{0x10, 28, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x80 | 0x40 | 0x20 | 0x08 | 0x04, 0, 30,
		0, 2, 'g', 'w', 0, 1, 's', 0, 3, 'o', 'f', 'f', 0, 1, 'u', 0, 1, 'p'}
	if got := p.append(nil); !bytes.Equal(got, want) {
		t.Fatalf("CONNECT\n got % x\nwant % x", got, want)
	}
}

// FuzzReader feeds arbitrary bytes, in chunks, to the packet decoder: it
// never panics, never returns a body over the limit, and a PUBLISH it
// accepts encodes back to the same bytes.
func FuzzReader(f *testing.F) {
	f.Add(byte(1), appendPublishHeader(nil, "a/b", 7, 3, 1, true, false))
	f.Add(byte(5), []byte{typeConnack << 4, 2, 1, 0, typePuback << 4, 2, 0, 1, typePingresp << 4, 0})
	f.Add(byte(2), []byte{typeSuback << 4, 3, 0, 1, 0, typePublish << 4, 0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, chunk byte, data []byte) {
		const limit = 4096
		rd := &reader{r: bufio.NewReaderSize(chunked{bytes.NewReader(data), int(chunk%16) + 1}, 16), max: limit}
		for {
			p, err := rd.read()
			if err != nil {
				return
			}
			if len(p.body)+2 > limit {
				t.Fatalf("a %d-byte body over the limit", len(p.body))
			}
			if p.kind() != typePublish {
				continue
			}
			m, err := parsePublish(p)
			if err != nil {
				t.Fatalf("read accepted a PUBLISH that does not parse: %v", err)
			}
			b := appendPublishHeader(nil, string(m.topic), m.id, len(m.payload), m.qos, m.retain, m.dup)
			b = append(b, m.payload...)
			rd2 := &reader{r: bufio.NewReader(bytes.NewReader(b)), max: limit}
			p2, err := rd2.read()
			if err != nil || p2.header != p.header || !bytes.Equal(p2.body, p.body) {
				t.Fatalf("re-encoded PUBLISH differs: %v", err)
			}
		}
	})
}
