package rules

import (
	"slices"
	"strings"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

// refusedLogEvery is how often (engine clock, ms) LimitSignals reports a
// warning as due for one asset: the first refusal, then at most once a minute.
const refusedLogEvery = 60_000

// Refusal is what LimitSignals (a batch) or NoteBirthRefused (a birth) refused.
type Refusal struct {
	Refused int    // readings (or birth signals) refused
	First   string // the first refused signal's name: a sample for the log
	Held    int    // signals the asset holds with what the batch or birth added (set when Refused > 0)
	Total   uint64 // refused for this asset since the engine tracks it
	Warn    bool   // a warning is due: the first refusal, then at most once a minute
}

// LimitSignals bounds the signals b's asset holds at max (0 or less: no
// bound). Readings of signals the asset already holds always pass; a
// reading of a signal it does not hold is taken while the asset holds fewer
// than max signals (a new signal named twice in b counts once), else it is
// removed from b.Readings (the order of the rest is kept), so that it is
// neither evaluated nor stored by anything b is given to next. Signals of
// the asset's class in the catalog are always taken, beyond max too (they
// are few and known, so invented names cannot lock them out); once held
// they count toward max like any other. It creates the asset's state as
// Process would (signals the rules name for its class are held from then
// on, beyond max too, and count toward it). The refusal is counted on the
// asset (see Refusal, AssetView.SignalsRefused).
func (e *Engine) LimitSignals(b *telemetry.Batch, max int) Refusal {
	if max <= 0 {
		return Refusal{}
	}
	a := e.asset(b.Asset.Site(), b.Asset.ID, b.Asset.Class, b.Asset.Path)
	if len(a.list)+len(b.Readings) <= max {
		return Refusal{} // every reading fits, even if all are new
	}
	room := max - len(a.list)
	var catalogued map[string]*catalog.Signal // the class's catalog signals, always taken
	if cl, ok := e.cat.Class(a.class); ok {
		catalogued = cl.Signals
	}
	var taken []string           // new signals taken from b (at most room of them)
	var takenSet map[string]bool // taken, once it is long
	var r Refusal
	kept := b.Readings[:0]
	for i := range b.Readings {
		name := b.Readings[i].Signal
		held := i < len(a.cache) && a.cache[i] != nil && a.cache[i].name == name
		if !held {
			_, held = a.sigs[name]
		}
		if !held {
			if takenSet != nil {
				held = takenSet[name]
			} else {
				held = slices.Contains(taken, name)
			}
		}
		if !held && (len(taken) < room || catalogued[name] != nil) {
			taken = append(taken, name)
			if takenSet != nil {
				takenSet[name] = true
			} else if len(taken) > 16 {
				takenSet = make(map[string]bool, room)
				for _, t := range taken {
					takenSet[t] = true
				}
			}
			held = true
		}
		if !held {
			if r.Refused == 0 {
				r.First = name
			}
			r.Refused++
			continue
		}
		kept = append(kept, b.Readings[i])
	}
	clear(b.Readings[len(kept):]) // no views into the payload left behind
	b.Readings = kept
	if r.Refused > 0 {
		r.First = strings.Clone(r.First) // a copy: the name may be a view into the payload
	}
	r.Held = len(a.list) + len(taken)
	return e.noteRefused(a, r)
}

// NoteRefused counts n signals refused on the asset outside LimitSignals:
// birth signals beyond the same bound (the birth was cut to its first
// max_signals_per_asset signals before Birth), or readings whose names
// break the schema's bounds; the asset must be tracked (Birth or
// LimitSignals was called). first is a sample name for the log.
func (e *Engine) NoteRefused(site, id string, n int, first string) Refusal {
	a, ok := e.lookup(site, id)
	if !ok || n <= 0 {
		return Refusal{}
	}
	return e.noteRefused(a, Refusal{Refused: n, First: first, Held: len(a.list)})
}

func (e *Engine) noteRefused(a *assetState, r Refusal) Refusal {
	if r.Refused == 0 {
		r.Total = a.refused
		return r
	}
	a.refused += uint64(r.Refused)
	r.Total = a.refused
	if now := e.now(); a.refusedLog == 0 || now-a.refusedLog >= refusedLogEvery {
		a.refusedLog, r.Warn = now, true
	}
	return r
}

// NamedSignals returns the signals the rules of s name for every asset of
// class (rules selected by asset id aside): an asset of the class holds
// them from its first message on, whatever max_signals_per_asset says.
func (s *Set) NamedSignals(cat *catalog.Catalog, class string) []string {
	e := New(s, cat, Options{})
	a := e.asset("_", "_", class, nil)
	out := make([]string, len(a.list))
	for i, sg := range a.list {
		out[i] = sg.name
	}
	return out
}
