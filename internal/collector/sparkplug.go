package collector

import (
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/ingest"
)

// LoadSparkplugMapping loads and checks the mapping file of the sparkplug
// block against cat (relative paths against the config's directory). It
// returns nil, nil without a sparkplug block. Errors are confload.Errors,
// each "file:line: field: reason" (smelter-collector -t prints them).
func (c *Config) LoadSparkplugMapping(cat *catalog.Catalog) (*ingest.Mapping, error) {
	if c.Sparkplug == nil {
		return nil, nil
	}
	return ingest.LoadMapping(c.Path(c.Sparkplug.Mapping), cat)
}

// sparkplugSource builds the Sparkplug B source of cfg.Sparkplug: it loads
// the mapping file (relative paths against the config's directory; errors
// as "file:line: field: reason") and registers the source's counters.
func (c *Collector) sparkplugSource() (*ingest.Sparkplug, error) {
	sp := *c.cfg.Sparkplug
	sp.Mapping = c.cfg.Path(sp.Mapping)
	sp.PasswordFile = c.cfg.Path(sp.PasswordFile)
	sp.TLS.ResolvePaths(c.cfg.dir)
	m, err := c.cfg.LoadSparkplugMapping(c.cat)
	if err != nil {
		return nil, err
	}
	return ingest.NewSparkplug(sp, m, c.log, ingest.NewSparkplugMetrics(c.reg))
}
