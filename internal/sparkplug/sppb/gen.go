// Package sppb is the generated Go code of the Sparkplug B payload schema
// (sparkplug_b.proto, from the Eclipse Sparkplug 3.0.0 specification). Use
// package sparkplug for topics, encoding and decoding.
package sppb

//go:generate protoc --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
