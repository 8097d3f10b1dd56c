package main

import "bytes"

// smelterPoints counts the readings of one smelter.telemetry/1 data batch
// (docs/schema.md): every reading has exactly one "signal" key, the batch
// header none.
func smelterPoints(msg []byte) int {
	return bytes.Count(msg, []byte(`"signal":`))
}

// telegrafPoints counts the fields of the metrics in one message of
// Telegraf's JSON serializer, single ({"fields":{...},"name":...}) or batch
// ({"metrics":[...]}) format. Field values are numbers here (the bench's
// fields are numeric); strings with escaped quotes are skipped correctly.
func telegrafPoints(msg []byte) int {
	key := []byte(`"fields":{`)
	n := 0
	for {
		i := bytes.Index(msg, key)
		if i < 0 {
			return n
		}
		msg = msg[i+len(key):]
		fields, end := countObject(msg)
		n += fields
		msg = msg[end:]
	}
}

// countObject counts the members of a JSON object whose opening brace was
// just consumed, and returns the offset past its closing brace.
func countObject(b []byte) (members, end int) {
	depth, inString, seen := 0, false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
			seen = true
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				if seen {
					members++
				}
				return members, i + 1
			}
			depth--
		case ',':
			if depth == 0 {
				members++
			}
		}
	}
	return members, len(b)
}
