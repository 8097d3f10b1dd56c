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
// ({"metrics":[...]}) format, leaving out the "Quality" field that
// opcua_listener adds to every value (a status text, not a point).
func telegrafPoints(msg []byte) int {
	key := []byte(`"fields":{`)
	n := 0
	for {
		i := bytes.Index(msg, key)
		if i < 0 {
			return n
		}
		msg = msg[i+len(key):]
		fields, end := countObject(msg, "Quality")
		n += fields
		msg = msg[end:]
	}
}

// countObject counts the members of a JSON object whose opening brace was
// just consumed, except those named skip, and returns the offset past its
// closing brace.
func countObject(b []byte, skip string) (members, end int) {
	depth := 0
	wantKey := true // the next string at depth 0 is a member's key
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			j := i + 1
			for ; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
			}
			if depth == 0 && wantKey {
				wantKey = false
				if string(b[i+1:min(j, len(b))]) != skip {
					members++
				}
			}
			i = j
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return members, i + 1
			}
			depth--
		case ',':
			if depth == 0 {
				wantKey = true
			}
		}
	}
	return members, len(b)
}
