//go:build !linux

package natswire

const guardSupported = false

func guardChunk(n int) []byte { return make([]byte, n) }

func guardRelease([]byte) {}
