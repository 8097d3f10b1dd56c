package opcua

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
