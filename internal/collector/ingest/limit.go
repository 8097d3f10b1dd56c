package ingest

import (
	"strings"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

// LimitBirth cuts bi's signal list to its first max distinct signals, in
// the birth's own order (the order of the gateway's configuration, and of
// the parts of a split birth), so the same birth always keeps the same
// signals and an operator decides which by the order of the points. Every
// entry of a kept signal stays (a signal listed twice counts once) and the
// order of what stays is kept. It returns how many distinct signals it cut
// and the first of them, a copy (a sample for the log). max <= 0: no bound.
// Signals of the asset's class in cat are always kept, beyond max too (as
// the rules engine's LimitSignals takes them); they count toward max.
func LimitBirth(bi *telemetry.Birth, max int, cat *catalog.Catalog) (cut int, first string) {
	if max <= 0 || len(bi.Signals) <= max {
		return 0, ""
	}
	var catalogued map[string]*catalog.Signal
	if cl, ok := cat.Class(bi.Asset.Class); ok {
		catalogued = cl.Signals
	}
	kept := make(map[string]bool, max) // name -> kept; cut names are false
	out := bi.Signals[:0]
	for _, si := range bi.Signals {
		k, ok := kept[si.Signal]
		if !ok {
			k = len(kept)-cut < max || catalogued[si.Signal] != nil
			if !k {
				if cut == 0 {
					first = strings.Clone(si.Signal)
				}
				cut++
			}
			kept[si.Signal] = k
		}
		if k {
			out = append(out, si)
		}
	}
	clear(bi.Signals[len(out):])
	bi.Signals = out
	return cut, first
}
