package collector

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/logging"
)

// logEvery is how often a limited log line is written per key at most.
const logEvery = time.Minute

// maxLogText bounds a string a publisher controls (a subject, an error
// that quotes a payload's field) in a log line.
const maxLogText = 256

// logLimits holds one logging.Limiter per key (a fixed set of reasons,
// never payload strings): a key's first line goes out at once, then at
// most one per logEvery, carrying how many were held back ("repeated",
// "in_last"), so a flood of bad messages (each counted by a metric anyway)
// writes a bounded log.
type logLimits struct {
	mu   sync.Mutex
	keys map[string]*logging.Limiter
	now  func() time.Time // nil: time.Now (tests set it)
}

// of returns key's limiter.
func (l *logLimits) of(key string) *logging.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lm := l.keys[key]
	if lm == nil {
		if l.keys == nil {
			l.keys = map[string]*logging.Limiter{}
		}
		lm = &logging.Limiter{Every: logEvery, Now: l.now}
		l.keys[key] = lm
	}
	return lm
}

// logCut returns s cut to maxLogText bytes for a log line.
func logCut(s string) string { return logging.Clip(s, maxLogText) }

// errCut returns err's text cut to maxLogText bytes for a log line.
func errCut(err error) string {
	if err == nil {
		return ""
	}
	return logCut(err.Error())
}

// warnLimited logs msg at WARN under key's limiter (logLimits).
func (c *Collector) warnLimited(key, msg string, args ...any) {
	c.logLim.of(key).Log(context.Background(), c.log, slog.LevelWarn, msg, args...)
}

// birthPartsDropped counts an incomplete split birth the shard's assembler
// dropped (ingest.BirthParts) and logs it under the limit; sh.mu is held.
func (c *Collector) birthPartsDropped(reason string) {
	c.m.partsDrop.WithLabelValues(reason).Inc()
	c.warnLimited("parts:"+reason, "split birth dropped before it completed (docs/schema.md, \"Split batches\")", "reason", reason,
		"max_parts", ingest.MaxBirthParts, "max_bytes", ingest.MaxBirthPartBytes, "max_held", ingest.MaxBirthPartsHeld, "ttl", ingest.BirthPartsTTL)
}
