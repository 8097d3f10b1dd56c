package collector

import (
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/telemetry"
)

// logEvery is how often a limited log line is written per key at most.
const logEvery = time.Minute

// maxLogText bounds a string a publisher controls (a subject, an error
// that quotes a payload's field) in a log line.
const maxLogText = 256

// logLimiter lets a log line through on its key's first occurrence and then
// at most once per logEvery, counting the ones it held back in between, so
// a flood of bad messages (each counted by a metric anyway) writes a
// bounded log. The keys are a fixed set (reasons), never payload strings.
type logLimiter struct {
	mu   sync.Mutex
	keys map[string]*logKey
}

type logKey struct {
	last    time.Time
	skipped int
}

// allow reports whether a line of key may be logged at now, and how many
// were held back since the last one logged.
func (l *logLimiter) allow(key string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[string]*logKey{}
	}
	k, ok := l.keys[key]
	if !ok {
		l.keys[key] = &logKey{last: now}
		return true, 0
	}
	if now.Sub(k.last) < logEvery {
		k.skipped++
		return false, 0
	}
	n := k.skipped
	k.last, k.skipped = now, 0
	return true, n
}

// logCut returns s cut to maxLogText bytes for a log line.
func logCut(s string) string { return telemetry.CutText(s, maxLogText) }

// errCut returns err's text cut to maxLogText bytes for a log line.
func errCut(err error) string {
	if err == nil {
		return ""
	}
	return logCut(err.Error())
}

// warnLimited logs msg at WARN under key's limit (logLimiter), with how
// many lines of key were held back since the previous one.
func (c *Collector) warnLimited(key, msg string, args ...any) {
	ok, skipped := c.logLim.allow(key, time.Now())
	if !ok {
		return
	}
	c.log.Warn(msg, append(args, "suppressed_since_last", skipped, "logged_at_most", "once a minute per reason")...)
}

// birthPartsDropped counts an incomplete split birth the shard's assembler
// dropped (ingest.BirthParts) and logs it under the limit; sh.mu is held.
func (c *Collector) birthPartsDropped(reason string) {
	c.m.partsDrop.WithLabelValues(reason).Inc()
	c.warnLimited("parts:"+reason, "split birth dropped before it completed (docs/schema.md, \"Split batches\")", "reason", reason,
		"max_parts", ingest.MaxBirthParts, "max_bytes", ingest.MaxBirthPartBytes, "max_held", ingest.MaxBirthPartsHeld, "ttl", ingest.BirthPartsTTL)
}
