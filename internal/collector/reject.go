package collector

import "github.com/smelterio/smelter/internal/collector/ingest"

// rejected counts and logs a batch ingest.Check refused (labelled with its
// reason) and skips it (nil error: the source acknowledges it, it is never
// redelivered).
func (c *Collector) rejected(subject string, err error) {
	c.m.malformed.WithLabelValues(string(ingest.ReasonOf(err))).Inc()
	c.log.Warn("batch rejected", "subject", subject, "reason", ingest.ReasonOf(err), "err", err)
}
