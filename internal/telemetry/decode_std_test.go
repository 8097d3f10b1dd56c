package telemetry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// wire types for decoding.
type batchWire struct {
	Schema     string        `json:"schema"`
	Gateway    string        `json:"gateway"`
	Seq        *uint64       `json:"seq"`
	Asset      AssetJSON     `json:"asset"`
	TSGW       int64         `json:"ts_gw"`
	Historical bool          `json:"historical"`
	Part       int           `json:"part"`
	Parts      int           `json:"parts"`
	Readings   []readingWire `json:"readings"`
}

type readingWire struct {
	Signal  string          `json:"signal"`
	Value   json.RawMessage `json:"value"`
	Text    string          `json:"text"`
	Unit    string          `json:"unit"`
	Quality string          `json:"quality"`
	TS      int64           `json:"ts"`
	Status  uint32          `json:"status"`
	Src     string          `json:"src"`
}

// decodeBatchStd is the encoding/json decoder DecodeBatch replaced; the
// differential test checks both agree. It parses and validates the wire form of a telemetry batch.
// Errors wrap ErrSchema for a message of another schema or major version and
// ErrInvalid for anything malformed.
func decodeBatchStd(data []byte) (*Batch, error) {
	var w batchWire
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if w.Schema != SchemaTelemetry {
		return nil, fmt.Errorf("%w: %q (want %q)", ErrSchema, w.Schema, SchemaTelemetry)
	}
	if w.Seq == nil {
		return nil, fmt.Errorf("%w: seq is missing", ErrInvalid)
	}
	b := &Batch{
		Gateway:    w.Gateway,
		Seq:        *w.Seq,
		Asset:      w.Asset.FromJSON(),
		TSGW:       w.TSGW,
		Historical: w.Historical,
		Part:       w.Part,
		Parts:      w.Parts,
		Readings:   make([]Reading, len(w.Readings)),
	}
	for i, rw := range w.Readings {
		q, err := ParseQuality(rw.Quality)
		if err != nil {
			return nil, fmt.Errorf("%w: readings[%d]: %w", ErrInvalid, i, err)
		}
		r := Reading{Signal: rw.Signal, Text: rw.Text, Unit: rw.Unit, Quality: q, TS: rw.TS, Status: rw.Status, Src: rw.Src}
		switch {
		case len(rw.Value) == 0 || string(rw.Value) == "null":
			r.NoValue = true
		default:
			v, err := strconv.ParseFloat(string(rw.Value), 64)
			if err != nil {
				return nil, fmt.Errorf("%w: readings[%d].value %s is not a number", ErrInvalid, i, rw.Value)
			}
			r.Value = v
		}
		if !q.HasValue() {
			r.NoValue = false
		}
		b.Readings[i] = r
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return b, nil
}
