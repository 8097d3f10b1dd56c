package mqttclient

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Control packet types (MQTT 3.1.1 section 2.2.1).
const (
	typeConnect     = 1
	typeConnack     = 2
	typePublish     = 3
	typePuback      = 4
	typePubrec      = 5
	typePubrel      = 6
	typePubcomp     = 7
	typeSubscribe   = 8
	typeSuback      = 9
	typeUnsubscribe = 10
	typeUnsuback    = 11
	typePingreq     = 12
	typePingresp    = 13
	typeDisconnect  = 14
)

// maxRemaining is the largest Remaining Length the four-byte variable
// length encoding can carry (section 2.2.3).
const maxRemaining = 268435455

// ErrMalformed is wrapped by every error about a packet from the broker that
// breaks MQTT 3.1.1 (bad remaining length, a field longer than its packet, a
// reserved flag set, an unexpected packet type). The connection is closed.
var ErrMalformed = errors.New("malformed packet")

// ErrBrokerDisconnect is the connection's error when the broker sent a
// DISCONNECT (a server may not in MQTT 3.1.1, but brokers that also speak
// MQTT 5 do when they shut down or drop a client): the broker closed the
// connection on purpose, not a malformed packet. The connection is closed.
var ErrBrokerDisconnect = errors.New("the broker sent DISCONNECT")

// ErrTooLarge is wrapped by the error about a packet from the broker larger
// than Options.MaxPacketSize. The connection is closed.
var ErrTooLarge = errors.New("packet exceeds the maximum packet size")

// appendRemaining appends n in the variable length encoding.
func appendRemaining(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, s []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// PublishSize is the size of the whole PUBLISH packet carrying payload bytes
// on topic at qos.
func PublishSize(topic string, payload int, qos byte) int {
	rem := 2 + len(topic) + payload
	if qos > 0 {
		rem += 2
	}
	n := 2
	for v := rem; v > 127; v >>= 7 {
		n++
	}
	return n + rem
}

// appendPublishHeader appends everything of a PUBLISH packet that precedes
// the payload: fixed header, topic and (QoS 1) packet id.
func appendPublishHeader(b []byte, topic string, id uint16, payload int, qos byte, retain, dup bool) []byte {
	h := byte(typePublish<<4) | qos<<1
	if retain {
		h |= 0x01
	}
	if dup {
		h |= 0x08
	}
	rem := 2 + len(topic) + payload
	if qos > 0 {
		rem += 2
	}
	b = append(b, h)
	b = appendRemaining(b, rem)
	b = appendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return b
}

// connectPacket is the CONNECT packet (section 3.1).
type connectPacket struct {
	clientID     string
	username     string
	password     []byte
	hasPassword  bool
	cleanSession bool
	keepalive    uint16
	will         *Will
}

func (p *connectPacket) append(b []byte) []byte {
	var flags byte
	if p.cleanSession {
		flags |= 0x02
	}
	rem := 10 + 2 + len(p.clientID)
	if p.will != nil {
		flags |= 0x04 | p.will.QoS<<3
		if p.will.Retain {
			flags |= 0x20
		}
		rem += 2 + len(p.will.Topic) + 2 + len(p.will.Payload)
	}
	if p.username != "" {
		flags |= 0x80
		rem += 2 + len(p.username)
	}
	if p.hasPassword {
		flags |= 0x40
		rem += 2 + len(p.password)
	}
	b = append(b, typeConnect<<4)
	b = appendRemaining(b, rem)
	b = appendString(b, "MQTT")
	b = append(b, 4, flags)
	b = binary.BigEndian.AppendUint16(b, p.keepalive)
	b = appendString(b, p.clientID)
	if p.will != nil {
		b = appendString(b, p.will.Topic)
		b = appendBytes(b, p.will.Payload)
	}
	if p.username != "" {
		b = appendString(b, p.username)
	}
	if p.hasPassword {
		b = appendBytes(b, p.password)
	}
	return b
}

// packet is one decoded control packet from the broker; body aliases the
// reader's buffer until the next read.
type packet struct {
	header byte // type and flags
	body   []byte
}

func (p packet) kind() byte { return p.header >> 4 }

// reader decodes packets from a stream, refusing any larger than max bytes.
type reader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// read returns the next packet. Its body is valid until the next call.
func (r *reader) read() (packet, error) {
	h, err := r.r.ReadByte()
	if err != nil {
		return packet{}, err
	}
	rem, n := 0, 1
	for mul := 1; ; mul *= 128 {
		d, err := r.r.ReadByte()
		if err != nil {
			return packet{}, noEOF(err)
		}
		n++
		rem += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
		if mul == 128*128*128 {
			return packet{}, fmt.Errorf("%w: remaining length longer than 4 bytes", ErrMalformed)
		}
	}
	if n+rem > r.max {
		return packet{}, fmt.Errorf("%w: a %d-byte packet (type %d), limit %d", ErrTooLarge, n+rem, h>>4, r.max)
	}
	if cap(r.buf) < rem {
		r.buf = make([]byte, rem)
	}
	r.buf = r.buf[:rem]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return packet{}, noEOF(err)
	}
	p := packet{header: h, body: r.buf}
	if err := p.check(); err != nil {
		return packet{}, err
	}
	return p, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// check validates the fixed header flags and the body length of a packet a
// client may receive (sections 2.2.2 and 3).
func (p packet) check() error {
	t, flags := p.kind(), p.header&0x0f
	switch t {
	case typeConnack:
		if flags != 0 || len(p.body) != 2 || p.body[0]&0xfe != 0 {
			return fmt.Errorf("%w: CONNACK", ErrMalformed)
		}
	case typePuback, typeUnsuback:
		if flags != 0 || len(p.body) != 2 {
			return fmt.Errorf("%w: packet type %d with %d bytes, flags %#x", ErrMalformed, t, len(p.body), flags)
		}
	case typeSuback:
		if flags != 0 || len(p.body) < 3 {
			return fmt.Errorf("%w: SUBACK", ErrMalformed)
		}
	case typePingresp:
		if flags != 0 || len(p.body) != 0 {
			return fmt.Errorf("%w: PINGRESP", ErrMalformed)
		}
	case typePublish:
		if _, err := parsePublish(p); err != nil {
			return err
		}
	case typeDisconnect:
		// an MQTT 5 DISCONNECT may carry a reason code and properties
		if flags != 0 {
			return fmt.Errorf("%w: DISCONNECT flags %#x", ErrMalformed, flags)
		}
		if len(p.body) > 0 {
			return fmt.Errorf("%w (MQTT 5 reason code %#02x)", ErrBrokerDisconnect, p.body[0])
		}
		return ErrBrokerDisconnect
	default:
		// PUBREC, PUBREL, PUBCOMP: the client never publishes or subscribes
		// at QoS 2; the others only a server receives.
		return fmt.Errorf("%w: unexpected packet type %d", ErrMalformed, t)
	}
	return nil
}

// Message is an incoming PUBLISH. Topic and Payload are valid only during
// the handler call.
type message struct {
	topic   []byte
	payload []byte
	id      uint16
	qos     byte
	retain  bool
	dup     bool
}

func parsePublish(p packet) (message, error) {
	m := message{qos: (p.header >> 1) & 3, retain: p.header&1 != 0, dup: p.header&8 != 0}
	if m.qos == 3 {
		return message{}, fmt.Errorf("%w: PUBLISH with QoS 3", ErrMalformed)
	}
	if m.qos == 2 {
		return message{}, fmt.Errorf("%w: PUBLISH at QoS 2 (only QoS 0 is subscribed)", ErrMalformed)
	}
	if m.qos == 0 && m.dup {
		return message{}, fmt.Errorf("%w: PUBLISH at QoS 0 with DUP", ErrMalformed)
	}
	b := p.body
	if len(b) < 2 {
		return message{}, fmt.Errorf("%w: PUBLISH without topic", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n == 0 || n > len(b) {
		return message{}, fmt.Errorf("%w: PUBLISH topic of %d bytes in %d", ErrMalformed, n, len(b))
	}
	m.topic, b = b[:n], b[n:]
	for _, c := range m.topic {
		if c == '+' || c == '#' || c == 0 {
			return message{}, fmt.Errorf("%w: PUBLISH topic with a wildcard or NUL", ErrMalformed)
		}
	}
	if m.qos > 0 {
		if len(b) < 2 {
			return message{}, fmt.Errorf("%w: PUBLISH without packet id", ErrMalformed)
		}
		m.id = binary.BigEndian.Uint16(b)
		if m.id == 0 {
			return message{}, fmt.Errorf("%w: PUBLISH with packet id 0", ErrMalformed)
		}
		b = b[2:]
	}
	m.payload = b
	return m, nil
}
