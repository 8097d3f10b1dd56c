package natsjs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

func startNATS(t testing.TB, o brokers.NATSOptions) *brokers.NATS {
	t.Helper()
	return brokertest.NATS(t, o)
}

type running struct {
	u    *Uplink
	m    *Metrics
	done chan error
	stop context.CancelFunc
}

// runUplink creates and runs an uplink until the test ends.
func runUplink(t testing.TB, cfg Config, log *slog.Logger, opts ...Option) *running {
	t.Helper()
	cfg.SetDefaults("gw-test")
	m := NewMetrics(nil)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := New(cfg, log, m, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{u: u, m: m, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- u.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

func envelopes(gateway string, from, n, size int) []telemetry.Envelope {
	out := make([]telemetry.Envelope, n)
	for i := range out {
		seq := uint64(from + i)
		data := bytes.Repeat([]byte{'a' + byte(seq%26)}, size)
		copy(data, fmt.Sprintf(`{"seq":%d}`, seq))
		out[i] = telemetry.Envelope{
			Subject: telemetry.Subject("plant", "motor", fmt.Sprintf("m-%d", seq%3), telemetry.KindData),
			MsgID:   telemetry.MsgID(gateway, seq),
			Data:    data,
		}
	}
	return out
}

func client(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// readStream returns every message of the stream in order.
func readStream(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get seq %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

func checkStream(t testing.TB, got []*jetstream.RawStreamMsg, want []telemetry.Envelope) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("stream holds %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Subject != want[i].Subject {
			t.Fatalf("msg %d subject %q, want %q", i, got[i].Subject, want[i].Subject)
		}
		if id := got[i].Header.Get(jetstream.MsgIDHeader); id != want[i].MsgID {
			t.Fatalf("msg %d Nats-Msg-Id %q, want %q", i, id, want[i].MsgID)
		}
		if !bytes.Equal(got[i].Data, want[i].Data) {
			t.Fatalf("msg %d payload differs: %q... want %q...", i, got[i].Data[:16], want[i].Data[:16])
		}
	}
}

func publish(t testing.TB, u *Uplink, msgs []telemetry.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := u.Publish(ctx, msgs); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func TestPublishCreatesStreamAndStoresExactPayloads(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	r := runUplink(t, Config{URL: srv.URL(), MaxAge: time.Hour, MaxPending: 16}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)

	msgs := envelopes("gw-test", 1, 200, 300) // more than max_pending: exercises the stall path
	publish(t, r.u, msgs)

	_, js := client(t, srv.URL())
	checkStream(t, readStream(t, js, DefaultStream), msgs)

	s, err := js.Stream(context.Background(), DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if !slices.Equal(c.Subjects, telemetry.TelemetryStreamSubjects("*")) || c.Storage != jetstream.FileStorage ||
		c.Duplicates != DuplicateWindow || c.MaxAge != time.Hour {
		t.Fatalf("stream config = subjects %v storage %v dup %v max_age %v", c.Subjects, c.Storage, c.Duplicates, c.MaxAge)
	}
	if got := metricValue(r.m.Published); got != 200 {
		t.Fatalf("published metric = %v, want 200", got)
	}
	if got := metricValue(r.m.Bytes); got != 200*300 {
		t.Fatalf("bytes metric = %v, want %d", got, 200*300)
	}
	if got := metricValue(r.m.Connected); got != 1 {
		t.Fatalf("connected metric = %v", got)
	}
	var h dto.Metric
	if err := r.m.Latency.Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 200 {
		t.Fatalf("latency histogram holds %d samples (%v), want 200", h.GetHistogram().GetSampleCount(), err)
	}
}

func TestPublishSameMsgIDStoresOnce(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	r := runUplink(t, Config{URL: srv.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)

	msgs := envelopes("gw-test", 100, 50, 64)
	publish(t, r.u, msgs)
	publish(t, r.u, msgs)        // a retry of the whole slice
	publish(t, r.u, msgs[10:20]) // a partial retry

	_, js := client(t, srv.URL())
	checkStream(t, readStream(t, js, DefaultStream), msgs)
	if got := metricValue(r.m.Duplicates); got != 60 {
		t.Fatalf("duplicates metric = %v, want 60", got)
	}
}

func TestExistingStreamIsChecked(t *testing.T) {
	t.Run("covering stream is used", func(t *testing.T) {
		srv := startNATS(t, brokers.NATSOptions{})
		_, js := client(t, srv.URL())
		if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "WIDE", Subjects: []string{"smelter.>"}}); err != nil {
			t.Fatal(err)
		}
		r := runUplink(t, Config{URL: srv.URL(), Stream: "WIDE"}, nil)
		wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
		msgs := envelopes("gw-test", 1, 5, 10)
		publish(t, r.u, msgs)
		checkStream(t, readStream(t, js, "WIDE"), msgs)
	})
	// A stream that cannot be used is a configuration error: logged at once
	// as an error (once, however often the check is retried), kept for
	// LastError (which /status and /readyz show), Run keeps going and the
	// uplink becomes ready once the stream is fixed on the server.
	unusable := func(t *testing.T, srv *brokers.NATS, cfg Config, want string, fix func(jetstream.JetStream) error) {
		t.Helper()
		cfg.URL = srv.URL()
		_, js := client(t, srv.URL())
		var logs logtest.Buffer
		r := runUplink(t, cfg, logs.Logger(slog.LevelDebug))
		wait.For(t, 10*time.Second, "the stream error kept for LastError", func() bool {
			err := r.u.LastError()
			return errors.Is(err, ErrStream) && strings.Contains(err.Error(), want)
		})
		wait.For(t, 10*time.Second, "the stream error logged", func() bool {
			return strings.Contains(logs.String(), `level=ERROR msg="nats stream check failed"`)
		})
		if r.u.Ready() {
			t.Fatal("ready with an unusable stream")
		}
		// the check is retried (backoff from 250 ms) without another line
		wait.For(t, 10*time.Second, "three checks", func() bool { return testutil.ToFloat64(r.m.StreamCheckFailures) >= 3 })
		if n := strings.Count(logs.String(), "nats stream check failed"); n != 1 {
			t.Fatalf("%d stream check lines, want 1 (rate-limited):\n%s", n, logs.String())
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned %v on an unusable stream; it must keep checking", err)
		default:
		}
		if err := fix(js); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 40*time.Second, "ready once the stream is fixed", r.u.Ready)
		if err := r.u.LastError(); err != nil {
			t.Fatalf("LastError %v once ready", err)
		}
	}
	t.Run("stream not covering the subjects is an error", func(t *testing.T) {
		srv := startNATS(t, brokers.NATSOptions{})
		_, js := client(t, srv.URL())
		if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "NARROW", Subjects: []string{"smelter.v1.plant.>"}}); err != nil {
			t.Fatal(err)
		}
		unusable(t, srv, Config{Stream: "NARROW"}, "does not cover smelter.v1.*.*.*.data", func(js jetstream.JetStream) error {
			_, err := js.UpdateStream(context.Background(), jetstream.StreamConfig{Name: "NARROW", Subjects: []string{"smelter.>"}})
			return err
		})
	})
	t.Run("missing stream with create_stream false", func(t *testing.T) {
		f := false
		unusable(t, startNATS(t, brokers.NATSOptions{}), Config{Stream: "ABSENT", CreateStream: &f}, "create_stream is false", func(js jetstream.JetStream) error {
			_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "ABSENT", Subjects: []string{"smelter.>"}})
			return err
		})
	})
}

func TestUserPasswordAuth(t *testing.T) {
	const pass = "s3cr3t-Pa55word"
	srv := startNATS(t, brokers.NATSOptions{Username: "smelter", Password: pass})
	t.Setenv("SMELTER_TEST_NATS_PW", pass)
	logs := &logtest.Buffer{}
	log := logs.Logger(slog.LevelDebug)

	ok := runUplink(t, Config{URL: srv.URL(), Username: "smelter", PasswordEnv: "SMELTER_TEST_NATS_PW"}, log)
	wait.For(t, 10*time.Second, "uplink ready", ok.u.Ready)
	publish(t, ok.u, envelopes("gw-test", 1, 3, 10))

	t.Setenv("SMELTER_TEST_NATS_BAD", "wrong-password")
	bad := runUplink(t, Config{URL: srv.URL(), Username: "smelter", PasswordEnv: "SMELTER_TEST_NATS_BAD"}, log)
	wait.For(t, 10*time.Second, "auth error recorded", func() bool { return bad.u.LastError() != nil })
	err := bad.u.Publish(context.Background(), envelopes("gw-test", 1, 1, 10))
	if !errors.Is(err, ErrNotConnected) || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("publish with a wrong password = %v, want not connected: authorization violation", err)
	}
	if bad.u.Ready() {
		t.Fatal("uplink with wrong password reports ready")
	}
	out := logs.String()
	if !strings.Contains(out, "nats connect failed") {
		t.Fatalf("the auth failure was not logged:\n%s", out)
	}
	for _, s := range []string{pass, "wrong-password"} {
		if strings.Contains(out, s) {
			t.Fatalf("log output contains a password:\n%s", out)
		}
	}
}

func TestTokenAndPasswordFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := dir + "/" + name
		if err := writeFile(p, content); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("token_file", func(t *testing.T) {
		srv := startNATS(t, brokers.NATSOptions{Token: "tok-123"})
		r := runUplink(t, Config{URL: srv.URL(), TokenFile: write("token", "tok-123\n")}, nil)
		wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
		publish(t, r.u, envelopes("gw-test", 1, 2, 10))
	})
	t.Run("password_file", func(t *testing.T) {
		srv := startNATS(t, brokers.NATSOptions{Username: "u", Password: "pw-file-secret"})
		r := runUplink(t, Config{URL: srv.URL(), Username: "u", PasswordFile: write("pw", "pw-file-secret\r\n")}, nil)
		wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
		publish(t, r.u, envelopes("gw-test", 1, 2, 10))
	})
}

func TestSecretErrorsNameFieldNotValue(t *testing.T) {
	dir := t.TempDir()
	empty := dir + "/empty"
	if err := writeFile(empty, "\n"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SMELTER_TEST_SET", "value-that-must-not-leak")
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"unset env", Config{Username: "u", PasswordEnv: "SMELTER_TEST_UNSET_VAR"},
			[]string{"uplinks.nats.password_env", "SMELTER_TEST_UNSET_VAR", "not set"}},
		{"missing password file", Config{Username: "u", PasswordFile: dir + "/nope"},
			[]string{"uplinks.nats.password_file", dir + "/nope", "no such file"}},
		{"empty token file", Config{TokenFile: empty}, []string{"uplinks.nats.token_file", empty, "empty"}},
		{"missing creds file", Config{CredsFile: dir + "/x.creds"}, []string{"uplinks.nats.creds_file", dir + "/x.creds"}},
		{"missing ca file", Config{TLS: tlsCA(dir + "/ca.pem")}, []string{"uplinks.nats.tls.ca_file", dir + "/ca.pem"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults("gw")
			_, err := New(tc.cfg, nil, nil)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "value-that-must-not-leak") {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestTLSWithClientCertificate(t *testing.T) {
	pki := brokertest.NewPKI(t)
	srv := startNATS(t, brokers.NATSOptions{TLS: pki.ServerTLS(true), VerifyClients: true})
	if !strings.HasPrefix(srv.URL(), "tls://") {
		t.Fatalf("URL %s", srv.URL())
	}
	r := runUplink(t, Config{URL: srv.URL(), TLS: tlsFiles(pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile)}, nil)
	wait.For(t, 10*time.Second, "uplink ready over mTLS", r.u.Ready)
	msgs := envelopes("gw-test", 1, 10, 100)
	publish(t, r.u, msgs)
	_, js := client(t, srv.URL(), nats.Secure(pki.ClientTLS()))
	checkStream(t, readStream(t, js, DefaultStream), msgs)

	// Without the client certificate the server refuses the handshake.
	nocert := runUplink(t, Config{URL: srv.URL(), TLS: tlsCA(pki.CAFile)}, nil)
	wait.For(t, 10*time.Second, "handshake error", func() bool { return nocert.u.LastError() != nil })
	if nocert.u.Ready() {
		t.Fatal("ready without a client certificate")
	}
	// A CA that did not sign the server is rejected by the client.
	other := brokertest.NewPKI(t)
	wrongCA := runUplink(t, Config{URL: srv.URL(), TLS: tlsFiles(other.CAFile, pki.ClientCertFile, pki.ClientKeyFile)}, nil)
	wait.For(t, 10*time.Second, "verification error", func() bool { return wrongCA.u.LastError() != nil })
	if !strings.Contains(wrongCA.u.LastError().Error(), "certificate") {
		t.Fatalf("error = %v, want a certificate verification error", wrongCA.u.LastError())
	}
}

func TestInsecureSkipVerifyIsLoggedAsWarning(t *testing.T) {
	logs := &logtest.Buffer{}
	cfg := Config{URL: "tls://127.0.0.1:1"}
	cfg.TLS.InsecureSkipVerify = true
	cfg.SetDefaults("gw")
	if _, err := New(cfg, logs.Logger(slog.LevelInfo), nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "insecure_skip_verify") {
		t.Fatalf("no warning logged: %q", logs.String())
	}
}

func TestBrokerRestartMidStream(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	r := runUplink(t, Config{URL: srv.URL(), Timeout: 2 * time.Second}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)

	var sent []telemetry.Envelope
	first := envelopes("gw-test", 1, 100, 200)
	publish(t, r.u, first)
	sent = append(sent, first...)

	srv.Shutdown()
	wait.For(t, 10*time.Second, "uplink notices the outage", func() bool { return !r.u.Ready() })
	during := envelopes("gw-test", 101, 100, 200)
	err := r.u.Publish(context.Background(), during)
	if err == nil {
		t.Fatal("publish during the outage reported success")
	}
	if !errors.Is(err, ErrNotConnected) {
		t.Logf("publish during outage: %v", err)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "uplink ready again", r.u.Ready)
	// The caller retries the failed slice, then goes on.
	publish(t, r.u, during)
	sent = append(sent, during...)
	last := envelopes("gw-test", 201, 50, 200)
	publish(t, r.u, last)
	sent = append(sent, last...)

	_, js := client(t, srv.URL())
	checkStream(t, readStream(t, js, DefaultStream), sent)
	if got := metricValue(r.m.Reconnects); got < 1 {
		t.Fatalf("reconnects metric = %v", got)
	}
	if got := metricValue(r.m.Errors); got < 1 {
		t.Fatalf("errors metric = %v", got)
	}
}

// TestOutageWhileAcksPending cuts the broker while a large slice is in
// flight: Publish must fail (or succeed only if every ack arrived), and a
// retry after the restart leaves every message stored exactly once.
func TestOutageWhileAcksPending(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	r := runUplink(t, Config{URL: srv.URL(), Timeout: 2 * time.Second, MaxPending: 64}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	msgs := envelopes("gw-test", 1, 2000, 1000)
	errc := make(chan error, 1)
	go func() { errc <- r.u.Publish(context.Background(), msgs) }()
	_, probe := client(t, srv.URL())
	wait.For(t, 10*time.Second, "some messages stored", func() bool { return streamMsgs(probe) > 0 })
	srv.Shutdown()
	err := <-errc
	t.Logf("publish across the outage: %v", err)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "uplink ready again", r.u.Ready)
	if err != nil {
		publish(t, r.u, msgs)
	}
	_, js := client(t, srv.URL())
	checkStream(t, readStream(t, js, DefaultStream), msgs)
}

func streamMsgs(js jetstream.JetStream) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

func TestPublishNotConnectedBeforeRun(t *testing.T) {
	cfg := Config{URL: "nats://127.0.0.1:1"}
	cfg.SetDefaults("gw")
	u, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Publish(context.Background(), envelopes("gw", 1, 1, 1)); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("publish before Run = %v", err)
	}
	if err := u.Publish(context.Background(), nil); err != nil {
		t.Fatalf("empty publish = %v", err)
	}
	if u.Name() != "nats" || u.Ready() {
		t.Fatal("name or ready wrong")
	}
}

func TestMetricsRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != "nats" {
				t.Fatalf("%s labels %v", mf.GetName(), m.GetLabel())
			}
		}
	}
	for _, n := range []string{"smelter_uplink_published_messages_total", "smelter_uplink_published_bytes_total",
		"smelter_uplink_publish_errors_total", "smelter_uplink_publish_latency_seconds", "smelter_uplink_connected",
		"smelter_uplink_reconnects_total"} {
		if !names[n] {
			t.Fatalf("metric %s not registered (have %v)", n, names)
		}
	}
}

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.GetCounter().GetValue()
	}
	return d.GetGauge().GetValue()
}
