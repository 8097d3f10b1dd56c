package collector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/commandtest"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/wait"
)

// call makes one API request with a bearer token and decodes a JSON answer.
func call(t *testing.T, method, url, token string, body any, out any) int {
	t.Helper()
	return commandtest.Call(t, method, url, token, body, out)
}

// TestCommandServiceEndToEnd runs the whole path over real sockets: an
// in-process NATS JetStream, a simulated compressor over Modbus, a real
// gateway and the collector's HTTP API. An operator's command changes the
// unload pressure setpoint and the readings follow (the setpoint, and the
// discharge pressure below the new unload point); a retry with the same
// id writes nothing; a viewer's command is refused (403) and nothing is
// written (the simulator's write counter); commands published directly on
// NATS unsigned or signed by an unknown key raise exactly one
// unauthorized_command alarm each, a command beyond the limits a
// command_rejected warning; the audit API lists every attempt, newest
// first, paged.
// collectorRefusalID matches the random id (24 hex digits, quoted) of a
// record the collector wrote for a command it refused itself.
var collectorRefusalID = regexp.MustCompile(`"[0-9a-f]{24}"`)

// normID is id, or "<id>" for such a random id.
func normID(id string) string {
	return strings.Trim(collectorRefusalID.ReplaceAllString(`"`+id+`"`, "<id>"), `"`)
}

func TestCommandServiceEndToEnd(t *testing.T) {
	r := commandtest.Start(t)
	assetURL := r.API + "/api/v1/assets/sim/ac-1"
	writes := func() int64 {
		n, _ := r.Fleet.Writes(commandtest.Asset)
		return n
	}
	// alerts as published on NATS
	var mu sync.Mutex
	var published []alert.Alert
	sub, err := r.NC.Subscribe("smelter.v1.sim.air_compressor.ac-1.alert", func(m *nats.Msg) {
		var a alert.Alert
		if json.Unmarshal(m.Data, &a) == nil && a.Kind == collector.KindCommand {
			mu.Lock()
			published = append(published, a)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	// the asset page's data: the write limits from the birth
	var detail dashboard.AssetDetail
	if code := call(t, "GET", assetURL, commandtest.ViewerToken, nil, &detail); code != 200 {
		t.Fatalf("asset: %d", code)
	}
	if len(detail.Writable) != 1 || detail.Writable[0].Signal != "unload_pressure_setpoint" || detail.Writable[0].Unit != "MPa" ||
		*detail.Writable[0].Write.Min != 0.6 || *detail.Writable[0].Write.Max != 0.9 || detail.Writable[0].Write.MaxStep != 0.1 {
		t.Fatalf("writable %s", mustJSON(t, detail.Writable))
	}

	// an operator lowers the setpoint: verified, one write, readings follow
	before := writes()
	var res command.Result
	body := map[string]any{"id": "op-1", "signal": "unload_pressure_setpoint", "value": 0.7, "unit": "MPa"}
	if code := call(t, "POST", assetURL+"/commands", commandtest.OperatorToken, body, &res); code != 200 ||
		res.Verdict != command.Verified || res.Requester != commandtest.OperatorName || res.ID != "op-1" ||
		res.New == nil || math.Abs(*res.New-0.7) > 1e-6 {
		t.Fatalf("operator's command: %d %+v", code, res)
	}
	if writes() != before+1 {
		t.Fatalf("%d writes for one command", writes()-before)
	}
	setpoint := func() float64 {
		var d dashboard.AssetDetail
		call(t, "GET", assetURL, commandtest.ViewerToken, nil, &d)
		for _, s := range d.Signals {
			if s.Signal == "unload_pressure_setpoint" && s.Value != nil {
				return *s.Value
			}
		}
		return math.NaN()
	}
	wait.For(t, 20*time.Second, "the setpoint reading to follow the command", func() bool { return math.Abs(setpoint()-0.7) < 1e-4 })
	// the compressor follows: once the receiver drained to the new band,
	// the discharge pressure the collector shows stays below the new
	// unload point (+0.02 MPa while delivering, + noise)
	pressure := func() (float64, int64) {
		var d dashboard.AssetDetail
		call(t, "GET", assetURL, commandtest.ViewerToken, nil, &d)
		for _, s := range d.Signals {
			if s.Signal == "discharge_pressure" && s.Value != nil {
				return *s.Value, s.TS
			}
		}
		return math.NaN(), 0
	}
	if err := r.Fleet.Advance(15 * time.Minute); err != nil {
		t.Fatal(err)
	}
	peak := 0.0
	for range 10 {
		if err := r.Fleet.Advance(time.Minute); err != nil {
			t.Fatal(err)
		}
		step := time.Now().UnixMilli()
		var p float64
		wait.For(t, 10*time.Second, "a discharge pressure read after the model stepped", func() bool {
			var ts int64
			p, ts = pressure()
			return ts > step
		})
		peak = math.Max(peak, p)
	}
	t.Logf("discharge pressure peak %v MPa", peak)
	if peak < 0.5 || peak > 0.7+0.02+0.01 {
		t.Errorf("discharge pressure peaked at %v MPa after the unload point was lowered to 0.7", peak)
	}

	// a retry with the same id: the earlier outcome, nothing written
	var again command.Result
	if code := call(t, "POST", assetURL+"/commands", commandtest.OperatorToken, body, &again); code != 200 || !again.Duplicate ||
		again.Verdict != command.Verified {
		t.Errorf("retry: %d %+v", code, again)
	}

	// a viewer, and nobody, cannot command
	var refusal struct{ Error string }
	if code := call(t, "POST", assetURL+"/commands", commandtest.ViewerToken,
		map[string]any{"signal": "unload_pressure_setpoint", "value": 0.8}, &refusal); code != 403 || !strings.Contains(refusal.Error, "viewers cannot send commands") {
		t.Errorf("viewer's command: %d %q", code, refusal.Error)
	}
	if code := call(t, "POST", assetURL+"/commands", "", map[string]any{"signal": "unload_pressure_setpoint", "value": 0.8}, nil); code != 401 {
		t.Errorf("command without a token: %d", code)
	}
	// an operator's body with data after the JSON object: 400, not sent
	req, _ := http.NewRequest("POST", assetURL+"/commands", strings.NewReader(`{"signal":"unload_pressure_setpoint","value":0.8}{"x":1}`))
	req.Header.Set("Authorization", "Bearer "+commandtest.OperatorToken)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "data after the JSON object") {
			t.Errorf("trailing data: %d %s", resp.StatusCode, body)
		}
	}
	if writes() != before+1 {
		t.Fatalf("a refused command wrote: %d writes", writes()-before)
	}

	// beyond the limits (an operator): rejected by the gateway, a warning
	var over command.Result
	if code := call(t, "POST", assetURL+"/commands", commandtest.OperatorToken,
		map[string]any{"id": "op-over", "signal": "unload_pressure_setpoint", "value": 0.95, "unit": "MPa"}, &over); code != 200 ||
		over.Verdict != command.Rejected || !strings.Contains(over.Reason, "outside the write limits") {
		t.Errorf("command beyond limits: %d %+v", code, over)
	}

	// straight on NATS: unsigned, and signed by a key no gateway trusts
	mk := func(id string) *command.Command {
		now := time.Now()
		return &command.Command{Schema: command.Schema, ID: id, Asset: "sim.air_compressor.ac-1", Signal: "unload_pressure_setpoint",
			Value: command.Num(0.65), Unit: "MPa", Requester: "mallory", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
	}
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	byStranger := mk("nats-stranger")
	if err := byStranger.Sign(stranger); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*command.Command{mk("nats-unsigned"), byStranger} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := command.Send(ctx, r.NC, c)
		cancel()
		if err != nil || res.Verdict != command.Rejected {
			t.Fatalf("%s: %+v %v", c.ID, res, err)
		}
	}
	if writes() != before+1 {
		t.Fatalf("refused commands wrote: %d writes", writes()-before)
	}

	// exactly the alerts: one rejected (warn); one unauthorized (alarm),
	// raised by the first attempt and updated by the second (one active
	// alarm per asset, attempts counted)
	type want struct {
		rule, severity, state, text string
		attempts                    float64
	}
	wantPublished := []want{
		{collector.RuleCommandRejected, "warn", "raised", `command refused "op-over" on unload_pressure_setpoint by "alice" (gateway gw-e2e): 0.95 MPa is outside the write limits 0.6..0.9 MPa`, 1},
		{collector.RuleUnauthorizedCommand, "alarm", "raised", `unauthorized command "<id>" on unload_pressure_setpoint by "viewer" (gateway collector/` + collector.Defaults().Group + `): permission denied by the collector: viewers cannot send commands: an operator's token is required (commands.operators in the collector's configuration)`, 1},
		{collector.RuleUnauthorizedCommand, "alarm", "updated", `unauthorized command "nats-unsigned" on unload_pressure_setpoint by "mallory" (gateway gw-e2e): unsigned: commands must be signed with a trusted key (2 refused since `, 2},
		{collector.RuleUnauthorizedCommand, "alarm", "updated", `unauthorized command "nats-stranger" on unload_pressure_setpoint by "mallory" (gateway gw-e2e): signature does not verify with any trusted key (3 refused since `, 3},
	}
	wantAlerts := []want{wantPublished[0], wantPublished[3]}
	got := func(list []alert.Alert) []want {
		var out []want
		for _, a := range list {
			if a.Kind == collector.KindCommand {
				text := collectorRefusalID.ReplaceAllString(a.Message, `"<id>"`)
				if i := strings.Index(text, " since "); i > 0 {
					text = text[:i+len(" since ")]
				}
				out = append(out, want{a.Rule, a.Severity.String(), string(a.State), text, a.Values["attempts"]})
			}
		}
		slices.SortFunc(out, func(x, y want) int { return strings.Compare(x.rule+x.text, y.rule+y.text) })
		return out
	}
	slices.SortFunc(wantAlerts, func(x, y want) int { return strings.Compare(x.rule+x.text, y.rule+y.text) })
	slices.SortFunc(wantPublished, func(x, y want) int { return strings.Compare(x.rule+x.text, y.rule+y.text) })
	var listed struct {
		Alerts []dashboard.AlertOut `json:"alerts"`
	}
	wait.For(t, 20*time.Second, "the alerts on the rejected commands", func() bool {
		listed.Alerts = nil
		call(t, "GET", r.API+"/api/v1/alerts?active=true", commandtest.ViewerToken, nil, &listed)
		var al []alert.Alert
		for _, a := range listed.Alerts {
			al = append(al, a.Alert)
		}
		g := got(al)
		return len(g) >= len(wantAlerts) && slices.ContainsFunc(g, func(w want) bool { return w.attempts == 3 })
	})
	var al []alert.Alert
	for _, a := range listed.Alerts {
		al = append(al, a.Alert)
		if a.Kind == collector.KindCommand && (a.Site != "sim" || a.Class != "air_compressor" || a.Asset != "ac-1" || a.Signal != "unload_pressure_setpoint" ||
			a.State == alert.Cleared || a.Key != alert.MakeKey("sim", "ac-1", a.Rule, map[bool]string{true: "unload_pressure_setpoint"}[a.Rule == collector.RuleCommandRejected])) {
			t.Errorf("alert %s", mustJSON(t, a.Alert))
		}
	}
	if g := got(al); !slices.Equal(g, wantAlerts) {
		t.Errorf("alerts\n got %+v\nwant %+v", g, wantAlerts)
	}
	wait.For(t, 10*time.Second, "the alerts published on NATS", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(published) >= len(wantPublished)
	})
	mu.Lock()
	if g := got(published); !slices.Equal(g, wantPublished) {
		t.Errorf("published alerts\n got %+v\nwant %+v", g, wantAlerts)
	}
	mu.Unlock()

	// the audit trail lists every attempt, newest first
	var page dashboard.AuditPage
	if code := call(t, "GET", assetURL+"/audit?limit=100", commandtest.ViewerToken, nil, &page); code != 200 {
		t.Fatalf("audit: %d", code)
	}
	var trail []string
	for i, rec := range page.Records {
		if i > 0 && rec.Seq >= page.Records[i-1].Seq {
			t.Errorf("audit not newest first: %d after %d", rec.Seq, page.Records[i-1].Seq)
		}
		trail = append(trail, fmt.Sprintf("%s:%s", normID(rec.ID), rec.Verdict))
	}
	slices.Reverse(trail)
	wantTrail := []string{"op-1:received", "op-1:accepted", "op-1:verified", "op-1:received", "op-1:verified",
		"<id>:rejected", // the viewer's attempt, refused and audited by the collector
		"op-over:received", "op-over:rejected", "nats-unsigned:received", "nats-unsigned:rejected",
		"nats-stranger:received", "nats-stranger:rejected"}
	if !slices.Equal(trail, wantTrail) || page.Before != 0 {
		t.Errorf("audit trail (oldest first)\n got %v\nwant %v (before %d)", trail, wantTrail, page.Before)
	}
	// paged: 4 + 4 + 4
	var paged []string
	cursor := ""
	for range 3 {
		var p dashboard.AuditPage
		call(t, "GET", assetURL+"/audit?limit=4"+cursor, commandtest.ViewerToken, nil, &p)
		for _, rec := range p.Records {
			paged = append(paged, fmt.Sprintf("%s:%s", normID(rec.ID), rec.Verdict))
		}
		cursor = fmt.Sprintf("&before=%d", p.Before)
		if p.Before == 0 {
			break
		}
	}
	slices.Reverse(paged)
	if !slices.Equal(paged, wantTrail) {
		t.Errorf("paged audit trail %v", paged)
	}
	// the pages' ordered consumers are gone: only the group's durable
	// alert consumer is left on the audit stream
	as, err := r.JS.Stream(context.Background(), commandtest.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := as.Info(context.Background()); err != nil || info.State.Consumers != 1 {
		t.Errorf("audit stream consumers after 4 audit pages: %v %+v, want the durable alert consumer only", err, info.State)
	}
	// a viewer probing with a signal that cannot be one is audited too
	if code := call(t, "POST", assetURL+"/commands", commandtest.ViewerToken,
		map[string]any{"signal": strings.Repeat("s", 100), "value": 0.8}, nil); code != 403 {
		t.Errorf("viewer's probe: %d", code)
	}
	var newest dashboard.AuditPage
	if code := call(t, "GET", assetURL+"/audit?limit=1", commandtest.ViewerToken, nil, &newest); code != 200 || len(newest.Records) != 1 ||
		newest.Records[0].Signal != "(invalid)" || newest.Records[0].Requester != "viewer" || newest.Records[0].Verdict != command.Rejected {
		t.Errorf("the viewer's probe in the audit trail: %d %+v", code, newest.Records)
	}
	if n := writes() - before; n != 1 {
		t.Errorf("%d writes after the refused commands, want the operator's one", n)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
