package collector_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/commandtest"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/wait"
)

// TestViewerCannotFloodTheAudit (review16 M-4): a viewer's refused
// commands are audited up to the per-client limit (burst
// dashboard.RefusedAuditBurst), then one summary record says further ones
// are only counted; the rest are answered 403 as before, counted in
// smelter_collector_http_rate_limited_total{endpoint="refused_command"},
// and add nothing to the audit stream. An operator's command afterwards
// is executed and audited as always.
func TestViewerCannotFloodTheAudit(t *testing.T) {
	r := commandtest.Start(t)
	assetURL := fmt.Sprintf("%s/api/v1/assets/%s/%s", r.API, commandtest.Site, commandtest.Asset)
	subject := fmt.Sprintf("smelter.v1.%s.%s.%s.audit", commandtest.Site, commandtest.Class, commandtest.Asset)
	records := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := r.JS.Stream(ctx, commandtest.AuditStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subject]
	}
	before := records()
	const attempts = 60
	for i := range attempts {
		var refusal struct{ Error string }
		if code := commandtest.Call(t, "POST", assetURL+"/commands", commandtest.ViewerToken,
			map[string]any{"signal": "unload_pressure_setpoint", "value": 0.8}, &refusal); code != 403 {
			t.Fatalf("viewer's command %d: %d %q", i, code, refusal.Error)
		}
	}
	want := uint64(dashboard.RefusedAuditBurst + 1)
	if n := records() - before; n != want {
		t.Fatalf("%d audit records for %d refused viewer commands, want %d (the burst and one summary)", n, attempts, want)
	}
	resp, err := http.Get(r.API + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if line := fmt.Sprintf(`smelter_collector_http_rate_limited_total{endpoint="refused_command"} %d`, attempts-int(want)); !strings.Contains(string(body), line) {
		t.Errorf("metrics lack %q", line)
	}
	// an operator is not limited: executed and audited
	var res command.Result
	if code := commandtest.Call(t, "POST", assetURL+"/commands", commandtest.OperatorToken,
		map[string]any{"signal": "unload_pressure_setpoint", "value": 0.7, "unit": "MPa"}, &res); code != 200 || res.Verdict != command.Verified {
		t.Fatalf("operator's command: %d %+v", code, res)
	}
	wait.For(t, 10*time.Second, "the operator's command in the audit stream", func() bool {
		return records()-before >= want+3
	})
}
