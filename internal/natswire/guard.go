package natswire

import "sync/atomic"

// guard is set by SetGuard.
var guard atomic.Bool

// SetGuard turns guard mode on or off for the connections' chunks made
// from then on, process-wide. It is for tests: with it on (on Linux;
// elsewhere it does nothing), read chunks are mapped outside the Go heap
// and the chunks Release frees are made inaccessible and never read into
// again, so that a view of a message kept past Release (a string of its
// payload stored somewhere) faults at its first read instead of showing
// another message's bytes later. Memory: every chunk read in guard mode
// keeps its address range (not its pages) until maxGuarded are, then the
// oldest are unmapped.
func SetGuard(on bool) { guard.Store(on && guardSupported) }

func guarded() bool { return guard.Load() }

// guardedTotal counts the chunks Release made inaccessible (guard mode).
var guardedTotal atomic.Int64

// Guarded returns how many chunks Release made inaccessible in guard mode
// so far, process-wide: a test suite run in guard mode checks with it that
// the guard was at work.
func Guarded() int64 { return guardedTotal.Load() }
