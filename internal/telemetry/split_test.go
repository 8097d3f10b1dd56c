package telemetry

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestSplit: every part fits the limit, decodes as a valid part with the
// batch's identity, and the parts' readings are the batch's, in order; a
// reading too large for any part is reported and left out.
func TestSplit(t *testing.T) {
	b := sampleBatch(300)
	whole := len(b.AppendJSON(nil))
	for _, limit := range []int{whole, whole - 1, whole / 2, 4096, 1024, 400} {
		parts, dropped := b.Split(limit, nil)
		if len(dropped) != 0 {
			t.Fatalf("limit %d: dropped %v", limit, dropped)
		}
		if limit >= whole {
			if len(parts) != 1 || parts[0].Parts != 0 {
				t.Fatalf("limit %d: a batch that fits was split into %d parts", limit, len(parts))
			}
			continue
		}
		var got []Reading
		for i, p := range parts {
			enc := p.AppendJSON(nil)
			if len(enc) > limit {
				t.Fatalf("limit %d: part %d is %d bytes", limit, i+1, len(enc))
			}
			dec, err := DecodeBatch(enc)
			if err != nil {
				t.Fatalf("limit %d: part %d: %v", limit, i+1, err)
			}
			if dec.Part != i+1 || dec.Parts != len(parts) || dec.Seq != b.Seq || dec.Gateway != b.Gateway || dec.TSGW != b.TSGW {
				t.Fatalf("limit %d: part %d decoded as part %d/%d seq %d", limit, i+1, dec.Part, dec.Parts, dec.Seq)
			}
			if want := PartMsgID(b.Gateway, b.Seq, i+1, len(parts)); dec.MsgID() != want {
				t.Fatalf("msg id %q, want %q", dec.MsgID(), want)
			}
			got = append(got, dec.Readings...)
		}
		if !reflect.DeepEqual(got, b.Readings) {
			t.Fatalf("limit %d: the parts' readings differ from the batch's", limit)
		}
		again, _ := b.Split(limit, nil)
		if !reflect.DeepEqual(again, parts) {
			t.Fatalf("limit %d: a second split differs", limit)
		}
	}
}

func TestSplitDropsWhatCannotFit(t *testing.T) {
	b := sampleBatch(10)
	b.Readings[4].Text = strings.Repeat("x", 2000)
	b.Readings[4].Quality = QualityGood
	parts, dropped := b.Split(1000, nil)
	if !reflect.DeepEqual(dropped, []int{4}) {
		t.Fatalf("dropped %v, want [4]", dropped)
	}
	n := 0
	for _, p := range parts {
		for _, r := range p.Readings {
			if r.Signal == b.Readings[4].Signal {
				t.Fatal("the oversized reading was sent")
			}
			n++
		}
	}
	if n != 9 {
		t.Fatalf("%d readings in the parts, want 9", n)
	}
	empty := &Batch{Gateway: "gw", Seq: 1, TSGW: 1, Asset: Asset{ID: "a", Class: "motor"}}
	if parts, dropped := empty.Split(10, nil); len(parts) != 0 || len(dropped) != 0 {
		t.Fatalf("a header over the limit: %d parts, dropped %v", len(parts), dropped)
	}
}

func TestPartFieldsValidated(t *testing.T) {
	for _, in := range []string{
		`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"part":3,"parts":2,"readings":[]}`,
		`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"part":1,"readings":[]}`,
		`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"part":0,"parts":2,"readings":[]}`,
		`{"schema":"smelter.telemetry/1","gateway":"gw","seq":1,"asset":{"id":"a","class":"motor"},"ts_gw":1,"part":1,"parts":-1,"readings":[]}`,
	} {
		if _, err := DecodeBatch([]byte(in)); err == nil {
			t.Errorf("accepted %s", in)
		}
	}
}

func sampleBirth(n int) *Birth {
	b := &Birth{Gateway: "gw-1", Seq: 9, TSGW: 5, Asset: AssetJSON{ID: "ua-1", Class: "motor"}, Protocol: "opcua",
		Nameplate: map[string]float64{"rated_power": 75}}
	for i := range n {
		lo, hi := 0.0, 100.0
		b.Signals = append(b.Signals, SignalInfo{Signal: fmt.Sprintf("sig_%05d", i), Unit: "Cel", Min: &lo, Max: &hi,
			IntervalMS: 1000, Src: fmt.Sprintf("opcua:ns=2;s=Plant.Device%05d.Temperature", i)})
	}
	return b
}

// TestSplitBirth: a birth over the limit is split into parts that each fit
// and decode; merged, they give back the birth.
func TestSplitBirth(t *testing.T) {
	b := sampleBirth(500)
	parts, dropped, err := SplitBirth(b, 8192)
	if err != nil || len(dropped) != 0 || len(parts) < 2 {
		t.Fatalf("%d parts, dropped %v, %v", len(parts), dropped, err)
	}
	var decoded []*Birth
	for i := range parts {
		data, err := MarshalBirth(&parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > 8192 {
			t.Fatalf("part %d is %d bytes", i+1, len(data))
		}
		d, err := DecodeBirth(data)
		if err != nil {
			t.Fatal(err)
		}
		if d.Part != i+1 || d.Parts != len(parts) || d.Nameplate["rated_power"] != 75 {
			t.Fatalf("part %d decoded as %d/%d", i+1, d.Part, d.Parts)
		}
		decoded = append(decoded, d)
	}
	decoded[0], decoded[1] = decoded[1], decoded[0] // any order
	m, err := MergeBirth(decoded)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, b) {
		t.Fatal("merged birth differs from the original")
	}
	if _, err := MergeBirth(decoded[1:]); err == nil {
		t.Fatal("merged with a part missing")
	}
	decoded[1] = decoded[0]
	if _, err := MergeBirth(decoded); err == nil {
		t.Fatal("merged with a part twice")
	}
	if one, _, _ := SplitBirth(b, 0); len(one) != 1 || one[0].Parts != 0 {
		t.Fatal("split without a limit")
	}
}
