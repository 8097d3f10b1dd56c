package ingest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/sparkplug/sppb"
)

// reorderHost is a host source fed through Handle and Expire with a clock
// the test moves, and tahu-edge-1 born with its node metric Header/Pressure
// (alias 1, the mapping's header-1 asset) at seq 0.
type reorderHost struct {
	s   *Sparkplug
	got *capture
	mu  sync.Mutex
	now time.Time
}

func newReorderHost(t *testing.T, timeout time.Duration) *reorderHost {
	t.Helper()
	mp, err := LoadMapping("testdata/sparkplug/mapping.yaml", catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSparkplug(SparkplugConfig{URL: "tcp://127.0.0.1:1", ClientID: "r", Groups: []string{"plant"}, Mapping: "m", ReorderTimeout: timeout},
		mp, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &reorderHost{s: s, got: &capture{}, now: time.UnixMilli(1700000000000)}
	s.now = func() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.now }
	if req := r.handle(t, "NBIRTH", &sppb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: proto.Uint64(0), Metrics: []*sppb.Payload_Metric{
		dmetric("bdSeq", 0, sppb.DataType_Int64, 0), dmetric("Header/Pressure", 1, sppb.DataType_Double, 100)}}); req != nil {
		t.Fatalf("NBIRTH refused: %v", req)
	}
	return r
}

func (r *reorderHost) handle(t *testing.T, typ string, p *sppb.Payload) []string {
	t.Helper()
	b, err := sparkplug.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return r.s.Handle(context.Background(), "spBv1.0/plant/"+typ+"/tahu-edge-1", b, r.got.handle)
}

// ndata is an NDATA with seq and the value v of Header/Pressure (psi).
func (r *reorderHost) ndata(t *testing.T, seq uint64, v float64) []string {
	t.Helper()
	return r.handle(t, "NDATA", &sppb.Payload{Timestamp: proto.Uint64(1700000000000 + seq), Seq: proto.Uint64(seq),
		Metrics: []*sppb.Payload_Metric{dmetric("", 1, sppb.DataType_Double, v)}})
}

func (r *reorderHost) advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

// values returns the header-1 readings handed on, in psi (the mapping
// converts to MPa: 1 psi = 0.00689476 MPa).
func (r *reorderHost) values() []float64 {
	var out []float64
	for _, b := range r.got.batches("header-1") {
		for _, rd := range b.Readings {
			out = append(out, float64(int(rd.Value/0.00689476+0.5)))
		}
	}
	return out
}

func TestSparkplugReorderTimeout(t *testing.T) {
	t.Run("tck-id-operational-behavior-host-reordering-param", func(t *testing.T) {
		s, err := NewSparkplug(SparkplugConfig{URL: "tcp://127.0.0.1:1", ClientID: "r", Groups: []string{"plant"}, Mapping: "m"}, &Mapping{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.cfg.ReorderTimeout != DefaultReorderTimeout {
			t.Fatalf("default reorder_timeout %v", s.cfg.ReorderTimeout)
		}
		c := SparkplugConfig{URL: "tcp://x:1", ClientID: "r", Groups: []string{"plant"}, Mapping: "m", ReorderTimeout: -time.Second}
		if err := c.Validate("sparkplug"); err == nil {
			t.Fatal("negative reorder_timeout accepted")
		}
	})
	t.Run("tck-id-operational-behavior-host-reordering-start", func(t *testing.T) {
		r := newReorderHost(t, 2*time.Second)
		r.ndata(t, 1, 10)
		if req := r.ndata(t, 3, 30); req != nil { // 2 is missing
			t.Fatalf("rebirth asked at the gap: %v", req)
		}
		if v := r.values(); len(v) != 2 || v[1] != 10 {
			t.Fatalf("values %v: seq 3 must be held", v)
		}
		r.advance(time.Second)
		if req := r.s.Expire(context.Background(), r.got.handle); req != nil {
			t.Fatalf("rebirth asked before the timeout: %v", req)
		}
	})
	t.Run("tck-id-operational-behavior-host-reordering-success", func(t *testing.T) {
		r := newReorderHost(t, 2*time.Second)
		r.ndata(t, 1, 10)
		r.ndata(t, 4, 40)
		r.ndata(t, 3, 30)
		if req := r.ndata(t, 2, 20); req != nil {
			t.Fatalf("rebirth asked though the gap closed: %v", req)
		}
		if v := r.values(); len(v) != 5 || v[1] != 10 || v[2] != 20 || v[3] != 30 || v[4] != 40 {
			t.Fatalf("values %v, want the birth's 100 then 10 20 30 40 in seq order", v)
		}
		r.advance(time.Minute)
		if req := r.s.Expire(context.Background(), r.got.handle); req != nil {
			t.Fatalf("rebirth asked after the gap closed: %v", req)
		}
		if req := r.ndata(t, 5, 50); req != nil || r.values()[5] != 50 {
			t.Fatalf("after the gap: %v %v", req, r.values())
		}
	})
	t.Run("tck-id-operational-behavior-host-reordering-rebirth", func(t *testing.T) {
		r := newReorderHost(t, 2*time.Second)
		r.ndata(t, 1, 10)
		r.ndata(t, 3, 30)
		r.ndata(t, 4, 40)
		r.advance(2 * time.Second)
		req := r.s.Expire(context.Background(), r.got.handle)
		if len(req) != 1 || req[0] != "spBv1.0/plant/NCMD/tahu-edge-1" {
			t.Fatalf("rebirth requests %v", req)
		}
		// nothing lost: the held messages are handed on as they came
		if v := r.values(); len(v) != 4 || v[2] != 30 || v[3] != 40 {
			t.Fatalf("values %v", v)
		}
	})
	t.Run("held messages bounded", func(t *testing.T) {
		r := newReorderHost(t, time.Hour)
		// seq 1 never comes (5 is out of order however often it repeats)
		var req []string
		for i := 0; i <= maxHeld && req == nil; i++ {
			req = r.ndata(t, 5, float64(i))
		}
		if len(req) != 1 || len(r.values()) != 1+maxHeld+1 {
			t.Fatalf("no rebirth after %d held messages", maxHeld+1)
		}
	})
}
