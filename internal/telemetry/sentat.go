package telemetry

import (
	"strconv"
	"strings"
)

// SentAtHeader is the NATS message header in which the gateway's JetStream
// uplink sends the time it published the message, on the gateway's data
// clock (the clock that stamps ts_gw and its own readings): decimal Unix
// milliseconds, digits only ("1763812345123"). The collector compares it
// with the message's arrival on its own clock to measure the gateway
// clock's lead at publish time, which a batch's ts_gw cannot tell for a
// spool backlog sent long after it was stamped (docs/schema.md, "Message
// headers"; docs/collector.md).
const SentAtHeader = "Smelter-Sent-At"

// maxSentAtDigits bounds the header's digits: 13 for every time until the
// year 2286; 16 leaves room without reaching int64's 19.
const maxSentAtDigits = 16

// AppendSentAt appends the SentAtHeader value of t (Unix ms) to dst.
func AppendSentAt(dst []byte, ms int64) []byte {
	return strconv.AppendInt(dst, ms, 10)
}

// ParseSentAt reads a SentAtHeader value: 1 to 16 decimal digits, no sign,
// no spaces, above 0. ok is false for anything else (a malformed or forged
// header, which the collector ignores and counts).
func ParseSentAt(v string) (ms int64, ok bool) {
	if len(v) == 0 || len(v) > maxSentAtDigits || strings.TrimLeft(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// GatewayStamped reports whether a reading from src carries a time the
// gateway stamped on its own data clock (when the reply or sentence
// arrived), not one its device stamped: Modbus ("modbus:...") and NMEA
// 0183 ("nmea:...") sources. Such a time is off by the gateway clock's
// error, as ts_gw is; an OPC UA SourceTimestamp ("opcua:...") or a
// Sparkplug metric's time is the device's, right or wrong on its own.
func GatewayStamped(src string) bool {
	return strings.HasPrefix(src, "modbus:") || strings.HasPrefix(src, "nmea:")
}
