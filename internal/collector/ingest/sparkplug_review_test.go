package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/sparkplug/sppb"
)

// syncBuf is a log buffer safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// direct returns a source fed through Handle (the protobuf payloads are
// real; no broker is needed to decide what a message means), its log and
// the handler's capture.
func direct(t *testing.T) (*Sparkplug, *syncBuf, *capture) {
	t.Helper()
	mp, err := LoadMapping("testdata/sparkplug/mapping.yaml", catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuf
	s, err := NewSparkplug(SparkplugConfig{URL: "tcp://127.0.0.1:1", ClientID: "t", Groups: []string{"plant"}, Mapping: "m"},
		mp, slog.New(slog.NewJSONHandler(&log, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, &log, &capture{}
}

func encode(t *testing.T, p *sppb.Payload) []byte {
	t.Helper()
	b, err := sparkplug.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	tahuNode = "spBv1.0/plant/NBIRTH/tahu-edge-1"
	tahuDev  = "spBv1.0/plant/%s/tahu-edge-1/compressor-9"
)

func devTopic(typ string) string { return strings.Replace(tahuDev, "%s", typ, 1) }

func nbirth(t *testing.T, s *Sparkplug, c *capture) {
	t.Helper()
	p := &sppb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: proto.Uint64(0),
		Metrics: []*sppb.Payload_Metric{dmetric("bdSeq", 0, sppb.DataType_Int64, 0)}}
	if r := s.Handle(context.Background(), tahuNode, encode(t, p), c.handle); r != nil {
		t.Fatalf("NBIRTH answered with rebirth %v", r)
	}
}

// TestTCKPayloadsAliasUniqueness: a DBIRTH that defines an alias or a name
// twice is refused (tck-id-payloads-alias-uniqueness): counted as
// malformed, logged with its topic, a rebirth is requested, and data by
// that alias feeds no signal.
func TestTCKPayloadsAliasUniqueness(t *testing.T) {
	for _, tc := range []struct {
		name    string
		metrics []*sppb.Payload_Metric
		want    string
	}{
		{"alias", []*sppb.Payload_Metric{
			dmetric("Outputs/Pressure", 1, sppb.DataType_Double, 7),
			dmetric("Outputs/Temperature", 1, sppb.DataType_Double, 80)}, "alias 1 is defined twice"},
		{"name", []*sppb.Payload_Metric{
			dmetric("Outputs/Pressure", 1, sppb.DataType_Double, 7),
			dmetric("Outputs/Pressure", 2, sppb.DataType_Double, 8)}, `Outputs/Pressure\" is defined twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, log, c := direct(t)
			nbirth(t, s, c)
			p := &sppb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: proto.Uint64(1), Metrics: tc.metrics}
			r := s.Handle(context.Background(), devTopic("DBIRTH"), encode(t, p), c.handle)
			if len(r) != 1 || r[0] != "spBv1.0/plant/NCMD/tahu-edge-1" {
				t.Errorf("rebirth %v, want the node's NCMD", r)
			}
			if got := testutil.ToFloat64(s.m.Errors.WithLabelValues(SPMalformed)); got != 1 {
				t.Errorf("malformed %v, want 1", got)
			}
			if !strings.Contains(log.String(), tc.want) || !strings.Contains(log.String(), `"topic":"`+devTopic("DBIRTH")+`"`) {
				t.Errorf("log lacks %q with the DBIRTH topic:\n%s", tc.want, log)
			}
			if bs, bis := c.batches("ac-9"), c.births("ac-9"); len(bs)+len(bis) != 0 {
				t.Fatalf("refused birth handed on: %d batches, %d births", len(bs), len(bis))
			}
			d := &sppb.Payload{Timestamp: proto.Uint64(1700000000001), Seq: proto.Uint64(2),
				Metrics: []*sppb.Payload_Metric{dmetric("", 1, sppb.DataType_Double, 9)}}
			s.Handle(context.Background(), devTopic("DDATA"), encode(t, d), c.handle)
			if bs := c.batches("ac-9"); len(bs) != 0 {
				t.Fatalf("DDATA after a refused DBIRTH fed %+v", bs[0].Readings)
			}
		})
	}
}

// TestSparkplugLogsNameTheTopic: an unknown alias in a DDATA and a unit
// that does not convert are logged with the message's own topic.
func TestSparkplugLogsNameTheTopic(t *testing.T) {
	s, log, c := direct(t)
	nbirth(t, s, c)
	p := &sppb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: proto.Uint64(1), Metrics: []*sppb.Payload_Metric{
		dmetric("Outputs/Pressure", 1, sppb.DataType_Double, 7),
		dmetric("Outputs/Temperature", 2, sppb.DataType_Double, 80, "engUnit", "bar")}} // bar is no temperature
	s.Handle(context.Background(), devTopic("DBIRTH"), encode(t, p), c.handle)
	d := &sppb.Payload{Timestamp: proto.Uint64(1700000000001), Seq: proto.Uint64(2),
		Metrics: []*sppb.Payload_Metric{dmetric("", 99, sppb.DataType_Double, 9)}}
	s.Handle(context.Background(), devTopic("DDATA"), encode(t, d), c.handle)
	var unit, alias bool
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, `"reason":"unit"`) {
			unit = true
			if !strings.Contains(l, `"topic":"`+devTopic("DBIRTH")+`"`) || !strings.Contains(l, "Outputs/Temperature") {
				t.Errorf("unit error not logged with the DBIRTH topic and the metric: %s", l)
			}
		}
		if strings.Contains(l, `"reason":"unknown_alias"`) {
			alias = true
			if !strings.Contains(l, `"topic":"`+devTopic("DDATA")+`"`) {
				t.Errorf("unknown alias not logged with the DDATA topic: %s", l)
			}
		}
	}
	if !unit || !alias {
		t.Fatalf("unit logged %v, unknown alias logged %v:\n%s", unit, alias, log)
	}
}

// TestSparkplugUnmappedNotTracked: messages of edge nodes and devices the
// mapping does not name are counted and not tracked, so invented ids cost
// no memory, and such nodes are never sent commands.
func TestSparkplugUnmappedNotTracked(t *testing.T) {
	s, _, c := direct(t)
	birth := encode(t, &sppb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(0),
		Metrics: []*sppb.Payload_Metric{dmetric("bdSeq", 0, sppb.DataType_Int64, 0)}})
	data := encode(t, &sppb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(1),
		Metrics: []*sppb.Payload_Metric{dmetric("", 1, sppb.DataType_Double, 1)}})
	const n = 2000
	for i := range n {
		id := "evil-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strings.Repeat("y", i/26)
		if r := s.Handle(context.Background(), "spBv1.0/plant/NBIRTH/"+id, birth, c.handle); r != nil {
			t.Fatalf("rebirth asked of unmapped %s", id)
		}
		if r := s.Handle(context.Background(), "spBv1.0/plant/DDATA/"+id+"/d", data, c.handle); r != nil {
			t.Fatalf("rebirth asked of unmapped %s", id)
		}
	}
	nbirth(t, s, c)
	for i := range n {
		p := encode(t, &sppb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(uint64(i+1) % 256),
			Metrics: []*sppb.Payload_Metric{dmetric("x", 1, sppb.DataType_Double, 1)}})
		if r := s.Handle(context.Background(), "spBv1.0/plant/DBIRTH/tahu-edge-1/dev-"+strings.Repeat("z", i%50)+string(rune('a'+i%26))+
			strings.Repeat("q", i/26), p, c.handle); r != nil {
			t.Fatalf("rebirth %v for an unmapped device's birth", r)
		}
	}
	s.mu.Lock()
	nodes, devices := len(s.nodes), len(s.nodes["plant/tahu-edge-1"].devices)
	s.mu.Unlock()
	if nodes != 1 || devices != 0 {
		t.Fatalf("tracking %d nodes, %d devices; want 1, 0", nodes, devices)
	}
	if got := testutil.ToFloat64(s.m.Nodes); got != 1 {
		t.Errorf("nodes gauge %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.m.Ignored.WithLabelValues(SPUnmappedNode)); got != 2*n {
		t.Errorf("unmapped_node %v, want %d", got, 2*n)
	}
	if got := testutil.ToFloat64(s.m.Ignored.WithLabelValues(SPUnmappedDevice)); got != n {
		t.Errorf("unmapped_device %v, want %d", got, n)
	}
}

// TestLoadMappingDuplicateSignal: two metrics of one device mapped to one
// signal are a mapping error naming file and line.
func TestLoadMappingDuplicateSignal(t *testing.T) {
	_, err := LoadMapping("testdata/sparkplug/dupsignal.yaml", catalog.Default())
	es := confload.AsErrors(err)
	want := `testdata/sparkplug/dupsignal.yaml:10: nodes[0].devices[0].metrics[1].signal: "discharge_pressure" is already the signal of nodes[0].devices[0].metrics[0]`
	if len(es) != 1 || es[0].Error() != want {
		t.Fatalf("errors %v, want %q", err, want)
	}
}

// TestSparkplugMetricsPresentFromStart: every reason and message type
// reads 0 before the first message, so dashboards and alerts see them.
func TestSparkplugMetricsPresentFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewSparkplugMetrics(reg)
	for name, want := range map[string]int{"smelter_collector_sparkplug_errors_total": 6, "smelter_collector_sparkplug_ignored_total": 2,
		"smelter_collector_sparkplug_messages_total": 6, "smelter_collector_sparkplug_nodes": 1, "smelter_collector_sparkplug_rebirth_requests_total": 1} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != want {
			t.Errorf("%s: %d series (%v), want %d", name, n, err, want)
		}
	}
}

// TestLoadMappingBounds: a mapped signal name and the path are held to
// the schema's bounds (docs/schema.md, "Bounds"), so the collector never
// refuses the readings its own mapping makes.
func TestLoadMappingBounds(t *testing.T) {
	_, err := LoadMapping("testdata/sparkplug/bounds.yaml", catalog.Default())
	got := fmt.Sprint(confload.AsErrors(err))
	for _, want := range []string{
		`testdata/sparkplug/bounds.yaml:4: nodes[0].path: invalid message: asset.path[2] "line 1" is not 0-64 letters, digits, '_' or '-'`,
		`testdata/sparkplug/bounds.yaml:10: nodes[0].devices[0].metrics[0].signal: "Inputs/Temperature" must be 1-64 letters, digits, '_' or '-'`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors %s\nwant %s", got, want)
		}
	}
	if n := len(confload.AsErrors(err)); n != 2 {
		t.Errorf("%d errors, want 2: %s", n, got)
	}
}
