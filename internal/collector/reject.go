package collector

import "github.com/smelterio/smelter/internal/collector/ingest"

// rejected counts and logs a batch ingest.Check refused (labelled with its
// reason) and skips it (nil error: the source acknowledges it, it is never
// redelivered).
func (c *Collector) rejected(subject string, err error) {
	r := string(ingest.ReasonOf(err))
	c.m.malformed.WithLabelValues(r).Inc()
	c.warnLimited("rejected:"+r, "batch rejected", "subject", logCut(subject), "reason", r, "err", errCut(err))
}
