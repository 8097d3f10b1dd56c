package telemetry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

func sampleBatch(n int) *Batch {
	b := &Batch{Gateway: "gw-jinan-01", Seq: 18231, TSGW: 1763812345123,
		Asset: Asset{ID: "bf-2", Class: "blast_furnace", Path: []string{"acme", "jinan", "ironmaking", "bf", "_"}}}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range n {
		r := Reading{Signal: fmt.Sprintf("signal_%02d", i), Value: 1000 + rng.Float64()*300, Unit: "Cel", TS: 1763812345101 + int64(i),
			Src: fmt.Sprintf("modbus:3:hr:%d", 40001+2*i)}
		switch i % 17 {
		case 5:
			r.Quality, r.Status, r.Value = QualityBad, 0x80000000, 0
		case 9:
			r.Quality = QualityUncertain
		case 13:
			r.Value, r.Text, r.Unit = 2, "loaded", ""
		}
		b.Readings = append(b.Readings, r)
	}
	return b
}

var decodeCorpus = []string{
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":5,"readings":[]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":0,"asset":{"id":"a","class":"motor","path":["e","s"]},"ts_gw":5,"historical":true,
	  "readings":[{"signal":"x","value":1.5e3,"unit":"Cel","quality":"good","ts":4,"status":7,"src":"s","extra":{"a":[1,null,"b"]}},
	              {"signal":"y","quality":"bad","value":3,"ts":4},{"signal":"z","value":null,"text":"hi \"q\" \u00e9 \ud83d\ude00","quality":"uncertain"}]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":null,"asset":{"id":"a","class":"motor"},"ts_gw":5,"readings":[]}`,
	`{"schema":"smelter.telemetry/2","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":5}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":-1,"asset":{"id":"a","class":"motor"},"ts_gw":5}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":5,"readings":[{"signal":"x","value":"1","quality":"good"}]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":5,"readings":[{"signal":"x","value":1,"quality":"fine"}]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":5,"readings":[{"signal":"x","value":1,"quality":"good","status":4294967296}]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":0,"readings":[]}`,
	`{"schema":"smelter.telemetry/1","gateway":"g w","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1.5,"asset":{"id":"a","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"readings":[{"signal":"x","value":1e999,"quality":"good"}]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"readings":[{"signal":"","value":1,"quality":"good"}]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"readings":[{"signal":"x\u0000","value":01,"quality":"good"}]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"readings":[{"signal":"x","value":1,"quality":"good"}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"readings":{}}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":7,"asset":{"id":"a","class":"motor"},"ts_gw":5,"historical":true,"part":2,"parts":3,"readings":[]}`,
	`{"schema":"smelter.telemetry/1","gateway":"gw","seq":7,"asset":{"id":"a","class":"motor"},"ts_gw":5,"part":4,"parts":3,"readings":[]}`,
	`[]`, `null`, ``, `{"schema":1}`, `{"schema":"smelter.telemetry/1",}`,
}

// TestDecodeMatchesEncodingJSON checks the hand-written decoder against the
// encoding/json decoder it replaced: same result, same error class.
func TestDecodeMatchesEncodingJSON(t *testing.T) {
	corpus := append([]string(nil), decodeCorpus...)
	corpus = append(corpus, string(sampleBatch(60).AppendJSON(nil)))
	for i, in := range corpus {
		got, gerr := DecodeBatch([]byte(in))
		want, werr := decodeBatchStd([]byte(in))
		if (gerr == nil) != (werr == nil) || errors.Is(gerr, ErrSchema) != errors.Is(werr, ErrSchema) || errors.Is(gerr, ErrInvalid) != errors.Is(werr, ErrInvalid) {
			t.Errorf("case %d: got err %v, encoding/json err %v\n%s", i, gerr, werr, in)
			continue
		}
		if gerr == nil && !reflect.DeepEqual(got, want) {
			t.Errorf("case %d: got %+v\nwant %+v", i, got, want)
		}
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	b := sampleBatch(80)
	got, err := DecodeBatch(b.AppendJSON(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, b)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for _, c := range decodeCorpus {
		f.Add([]byte(c))
	}
	f.Add(sampleBatch(20).AppendJSON(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrSchema) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrSchema", err)
			}
			return
		}
		enc := b.AppendJSON(nil)
		b2, err := DecodeBatch(enc)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		// text of a valueless good reading and the path's nil/empty form are
		// not carried by the wire form; compare the encodings instead
		if enc2 := b2.AppendJSON(nil); string(enc2) != string(enc) {
			t.Fatalf("round trip differs:\n%s\n%s", enc, enc2)
		}
	})
}

// FuzzDecodeBatchInto: decoding into a batch reused across inputs, from
// bytes or from a string (every
// field set by the one before, readings of any number) gives exactly what
// DecodeBatch gives, or the same error.
func FuzzDecodeBatchInto(f *testing.F) {
	for _, c := range decodeCorpus {
		f.Add([]byte(c))
	}
	f.Add(sampleBatch(20).AppendJSON(nil))
	f.Add(sampleBatch(3).AppendJSON(nil))
	into := sampleBatch(40) // leftovers of an earlier batch
	f.Fuzz(func(t *testing.T, data []byte) {
		want, werr := DecodeBatch(data)
		var gerr error
		if len(data)%2 == 0 { // both ways into the same batch
			gerr = DecodeBatchInto(into, data)
		} else {
			gerr = DecodeBatchStringInto(into, string(data))
		}
		if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
			t.Fatalf("DecodeBatch error %v, DecodeBatchInto error %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		got := *into
		if len(got.Readings) == 0 && len(want.Readings) == 0 {
			got.Readings, want.Readings = nil, nil
		}
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("into a reused batch:\n got %+v\nwant %+v", got, *want)
		}
	})
}

func BenchmarkDecodeBatch(b *testing.B) {
	for _, n := range []int{20, 60, 100} {
		data := sampleBatch(n).AppendJSON(nil)
		b.Run(fmt.Sprintf("readings=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := DecodeBatch(data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/reading")
		})
		short := sampleBatch(n) // registers scaled by 0.1, as gateways mostly send them
		for i := range short.Readings {
			short.Readings[i].Value = float64(int(short.Readings[i].Value*10)) / 10
		}
		// into: from bytes (a copy of the payload to a string); string-into:
		// from a string, as the collector decodes a message payload
		for _, v := range []struct {
			name    string
			data    []byte
			fromStr bool
		}{{"into", data, false}, {"string-into", data, true}, {"string-into-short-values", short.AppendJSON(nil), true}} {
			b.Run(fmt.Sprintf("%s/readings=%d", v.name, n), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(v.data)))
				var into Batch
				str := string(v.data)
				for b.Loop() {
					var err error
					if v.fromStr {
						err = DecodeBatchStringInto(&into, str)
					} else {
						err = DecodeBatchInto(&into, v.data)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/reading")
			})
		}
		b.Run(fmt.Sprintf("encoding-json/readings=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeBatchStd(data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/reading")
		})
	}
}

// TestDecodeBatchStringIntoAllocatesNothing: once the reused batch's
// readings and path arrays are large enough, decoding from a string costs
// no allocation (the collector decodes every message so; the path was one
// allocation per batch before).
func TestDecodeBatchStringIntoAllocatesNothing(t *testing.T) {
	s := string(sampleBatch(20).AppendJSON(nil))
	var b Batch
	if err := DecodeBatchStringInto(&b, s); err != nil || len(b.Asset.Path) == 0 {
		t.Fatalf("%v, path %q", err, b.Asset.Path)
	}
	if n := testing.AllocsPerRun(100, func() { _ = DecodeBatchStringInto(&b, s) }); n != 0 {
		t.Errorf("DecodeBatchStringInto allocates %v times per batch", n)
	}
}
