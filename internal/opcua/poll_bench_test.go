package opcua

import (
	"fmt"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/opcua/uaunits"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// BenchmarkPollRead1k is one poll cycle of a 1,000-point group over
// loopback, the values alone (one Read request within the server's
// MaxNodesPerRead of 1,000): the client's time and allocations per poll.
func BenchmarkPollRead1k(b *testing.B) { benchPollRead1k(b, false) }

// BenchmarkPollRead1kUnitsChecked is a poll cycle that also reads the
// EngineeringUnits and EURange of every point (unit_check_interval due;
// every read when it is at or below the poll interval): 3,000 items in
// three requests.
func BenchmarkPollRead1kUnitsChecked(b *testing.B) { benchPollRead1k(b, true) }

// benchPoller is a poller of a 1,000-point group (n points, every one
// taking its unit from its node) on a session to a server in a child
// process, its units read as at a session's start.
func benchPoller(b *testing.B, n int) *poller {
	b.Helper()
	endpoint := benchServerProcess(b, n)
	points := make([]Point, n)
	for i := range points {
		points[i] = Point{NodeID: fmt.Sprintf("ns=1;s=bench.s%05d", i), Mode: ModePoll, PollInterval: time.Second, UnitFromNode: true}
	}
	cfg := Config{Endpoint: endpoint, DataDir: b.TempDir(), RequestTimeout: 30 * time.Second, Isolation: IsolationNone}
	c, err := New("bench", cfg, points, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	cl, err := connect(ctx, &c.cfg, c.log, c.cfg.RequestTimeout)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeClient(cl) })
	nodes, _, err := c.resolve(ctx, cl)
	if err != nil {
		b.Fatal(err)
	}
	lim, err := c.limits(ctx, cl)
	if err != nil {
		b.Fatal(err)
	}
	props, err := c.units(ctx, cl, nodes, lim, newRunState(c, func(*sample.Cycle) {}))
	if err != nil {
		b.Fatal(err)
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	p, err := c.newPoller(cl, nodes, props, idx, lim)
	if err != nil {
		b.Fatal(err)
	}
	if len(p.check) != n {
		b.Fatalf("%d of %d points have units to check", len(p.check), n)
	}
	return p
}

func benchPollRead1k(b *testing.B, check bool) {
	const n = 1000
	p := benchPoller(b, n)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.read(ctx, check); err != nil {
			b.Fatal(err)
		}
	}
	if s := p.ss[n-1]; s.Index != n-1 || s.Quality != telemetry.QualityGood {
		b.Fatalf("last sample %+v", s)
	}
	if check {
		if u := p.units[n-1]; u.Err != nil || u.Index != n-1 {
			b.Fatalf("last unit %+v", u)
		}
	}
}

// BenchmarkPollWireSize reports the encoded size of one poll of 1,000
// Double points, values alone and with each point's EngineeringUnits
// (UNECE namespace, code, display name, description) and EURange: what a
// unit check adds to the request and the response.
func BenchmarkPollWireSize(b *testing.B) {
	const n = 1000
	now := time.Now()
	eu := ua.NewExtensionObject(&ua.EUInformation{NamespaceURI: uaunits.NamespaceURI, UnitID: 4408652,
		DisplayName: &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: "°C"},
		Description: &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: "degree Celsius"}})
	rg := ua.NewExtensionObject(&ua.Range{Low: 900, High: 1350})
	for _, check := range []bool{false, true} {
		name := "values"
		if check {
			name = "units-checked"
		}
		b.Run(name, func(b *testing.B) {
			req := &ua.ReadRequest{RequestHeader: &ua.RequestHeader{AuthenticationToken: ua.NewTwoByteNodeID(0), Timestamp: now},
				TimestampsToReturn: ua.TimestampsToReturnBoth}
			resp := &ua.ReadResponse{ResponseHeader: &ua.ResponseHeader{Timestamp: now, ServiceDiagnostics: &ua.DiagnosticInfo{}, StringTable: []string{}, AdditionalHeader: ua.NewExtensionObject(nil)}}
			dv := func(v any) *ua.DataValue {
				return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
					Value: ua.MustVariant(v), SourceTimestamp: now, ServerTimestamp: now}
			}
			for i := range n {
				req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.NewStringNodeID(1, fmt.Sprintf("bf-%d.hot_blast_temp", i)), AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}})
				resp.Results = append(resp.Results, dv(float64(i)))
				if check {
					for _, prop := range []string{"EngineeringUnits", "EURange"} {
						req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.NewStringNodeID(1, fmt.Sprintf("bf-%d.hot_blast_temp.%s", i, prop)), AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}})
					}
					resp.Results = append(resp.Results, dv(eu), dv(rg))
				}
			}
			var nreq, nresp int
			for b.Loop() {
				q, err := ua.Encode(req)
				if err != nil {
					b.Fatal(err)
				}
				r, err := ua.Encode(resp)
				if err != nil {
					b.Fatal(err)
				}
				nreq, nresp = len(q), len(r)
			}
			b.ReportMetric(float64(nreq), "req-bytes")
			b.ReportMetric(float64(nresp), "resp-bytes")
		})
	}
}
