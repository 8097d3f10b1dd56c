package collector

import (
	"github.com/smelterio/smelter/internal/collector/ingest"
)

// sparkplugSource builds the Sparkplug B source of cfg.Sparkplug: it loads
// the mapping file (relative paths against the config's directory; errors
// as "file:line: field: reason") and registers the source's counters.
func (c *Collector) sparkplugSource() (*ingest.Sparkplug, error) {
	sp := *c.cfg.Sparkplug
	sp.Mapping = c.cfg.Path(sp.Mapping)
	sp.PasswordFile = c.cfg.Path(sp.PasswordFile)
	sp.TLS.ResolvePaths(c.cfg.dir)
	m, err := ingest.LoadMapping(sp.Mapping, c.cat)
	if err != nil {
		return nil, err
	}
	return ingest.NewSparkplug(sp, m, c.log, ingest.NewSparkplugMetrics(c.reg))
}
