package opcua

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// TestWorkerExitSeriesFromStart: a device whose sessions run in a worker
// process has its worker exits of both causes at 0 before any session; a
// device in the gateway's process (isolation none) has none.
func TestWorkerExitSeriesFromStart(t *testing.T) {
	for _, tc := range []struct {
		isolation string
		want      int
	}{{IsolationEndpoint, 2}, {IsolationProcess, 2}, {IsolationNone, 0}} {
		m := NewMetrics(prometheus.NewRegistry())
		if _, err := New("dev-1", Config{Endpoint: "opc.tcp://h:1", Isolation: tc.isolation}, []Point{{NodeID: "ns=2;s=x"}}, nil, m); err != nil {
			t.Fatal(err)
		}
		if n := testutil.CollectAndCount(m.workerExits); n != tc.want {
			t.Errorf("isolation %s: %d worker_exits series before any session, want %d", tc.isolation, n, tc.want)
		}
		for _, cause := range []string{"panic", "exit"} {
			if tc.want > 0 && testutil.ToFloat64(m.workerExits.WithLabelValues("dev-1", cause)) != 0 {
				t.Errorf("isolation %s: worker_exits{cause=%s} not 0 at start", tc.isolation, cause)
			}
		}
	}
}

// TestPublishMetricsCountWhatTheySay (review15): a subscription whose
// values stay constant is answered with keep-alives, and each is a
// publish response; the latency histogram observes the data responses
// with their real, non-zero latency, through a session worker too.
func TestPublishMetricsCountWhatTheySay(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) {
			cfg := baseConfig(t, f)
			cfg.Isolation = iso
			cfg.KeepAlive = 100 * time.Millisecond // keep-alive period 150 ms
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			c, err := New("dev-1", cfg, pointsFor(f, "bf-2", ModeSubscribe, "top_gas_co"), testLog(t), m)
			if err != nil {
				t.Fatal(err)
			}
			rec := newRecorder()
			runClient(t, c, rec)
			wait.For(t, 20*time.Second, "the value", func() bool {
				return rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityGood }) > 0
			})
			wait.For(t, 20*time.Second, "10 publish responses of a constant value (keep-alives)", func() bool {
				return testutil.ToFloat64(m.publishes.WithLabelValues("dev-1")) >= 10
			})
			if err := f.Set("bf-2", "top_gas_co", 23.5, time.Now()); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 20*time.Second, "two latency observations with a non-zero sum", func() bool {
				var mm dto.Metric
				h, err := m.publishLatency.GetMetricWithLabelValues("dev-1")
				if err != nil || h.(prometheus.Metric).Write(&mm) != nil {
					return false
				}
				return mm.GetHistogram().GetSampleCount() >= 2 && mm.GetHistogram().GetSampleSum() > 0
			})
		})
	}
}
