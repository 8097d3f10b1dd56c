package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gateway/gatewaytest"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestCommandPermissions runs nats-server with nats/commands-permissions.conf
// and a real gateway as user gateway: user commander's signed command is
// written; the same signed command published by user viewer or user gateway
// is refused by the broker and never reaches the device.
func TestCommandPermissions(t *testing.T) {
	pw := map[string]string{"gateway": "gw-test-pw", "commander": "cmd-test-pw", "viewer": "view-test-pw"}
	for u, p := range pw {
		t.Setenv("SMELTER_NATS_"+strings.ToUpper(u)+"_PASSWORD", p)
	}
	opts, err := server.ProcessConfigFile("nats/commands-permissions.conf")
	if err != nil {
		t.Fatalf("nats-server rejects nats/commands-permissions.conf: %v", err)
	}
	opts.Port, opts.StoreDir, opts.NoSigs, opts.NoLog = -1, t.TempDir(), true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	url := srv.ClientURL()

	bank := modbustest.NewBank()
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 700)
	mb := modbustest.StartServer(t, bank)
	op, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := op.PublicKey()
	cfgText := fmt.Sprintf(`gateway: {id: gw-perm, site: jinan, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q, username: gateway, password_env: SMELTER_NATS_GATEWAY_PASSWORD}}
commands: {trusted_keys: [%s]}
devices:
  - id: sp-1
    class: generic
    modbus: {address: %q, unit_id: 1}
    points:
      - {signal: pressure_setpoint, table: holding, address: 0, type: uint16, scale: 0.001, unit: MPa, write: {min: 0.6, max: 0.9}}
`, url, pub, mb.Addr)
	gatewaytest.Run(t, cfgText)

	conn := func(user string) (*nats.Conn, chan error) {
		perm := make(chan error, 8)
		nc, err := nats.Connect(url, nats.UserInfo(user, pw[user]),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { perm <- err }))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc, perm
	}
	n := 0
	mk := func(v float64) *command.Command {
		n++
		now := time.Now()
		c := &command.Command{Schema: command.Schema, ID: fmt.Sprintf("perm-%d", n), Asset: "jinan.generic.sp-1",
			Signal: "pressure_setpoint", Value: command.Num(v), Unit: "MPa", Requester: "perm-test", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
		if err := c.Sign(op); err != nil {
			t.Fatal(err)
		}
		return c
	}
	commander, _ := conn("commander")
	var res *command.Result
	wait.For(t, 15*time.Second, "the gateway to answer user commander", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		res, err = command.Send(ctx, commander, mk(0.75))
		return err == nil
	})
	if res.Verdict != command.Verified || bank.Writes() != 1 {
		t.Fatalf("commander: %+v, %d writes", res, bank.Writes())
	}
	for _, user := range []string{"viewer", "gateway"} {
		nc, perm := conn(user)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := command.Send(ctx, nc, mk(0.8))
		cancel()
		if err == nil {
			t.Errorf("user %s commanded", user)
		}
		select {
		case err := <-perm:
			if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				t.Errorf("user %s: %v, want a permissions violation", user, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("user %s: no permissions violation publishing on .cmd", user)
		}
	}
	if bank.Writes() != 1 {
		t.Errorf("%d writes: a refused publisher reached the device", bank.Writes())
	}
	// the gateway created the audit stream (its permissions allow it); a
	// viewer reads its info but can neither delete (permissions) nor purge
	// (permissions, and the stream's deny_purge) it
	viewer, _ := conn("viewer")
	vjs, err := jetstream.New(viewer)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := vjs.Stream(ctx, telemetry.AuditStream)
	if err != nil || s.CachedInfo().State.Msgs == 0 {
		t.Fatalf("viewer: audit stream info: %v", err)
	}
	for name, call := range map[string]func(context.Context) error{
		"delete": func(ctx context.Context) error { return vjs.DeleteStream(ctx, telemetry.AuditStream) },
		"purge":  func(ctx context.Context) error { return s.Purge(ctx) },
	} {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second) // a denied request times out
		err := call(cctx)
		ccancel()
		if err == nil {
			t.Errorf("viewer could %s the audit stream", name)
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	after, err := vjs.Stream(ctx, telemetry.AuditStream)
	if err != nil || after.CachedInfo().State.Msgs != s.CachedInfo().State.Msgs {
		t.Fatalf("audit stream after the viewer's attempts: %v, %+v", err, after)
	}
}

// TestCommandsAcrossAccounts loads nats/nats-cluster.conf (hence
// smelter-accounts.conf, the layout every deployment includes) on one node
// and runs a real gateway as gw-site1 in account SITE_site1: user commander
// of account SMELTER sends a signed command that crosses the site's
// service export, is written, audited into the SMELTER_AUDIT stream (the
// gateway's audit publish through its import) and answered; commander may
// publish nothing but commands, and the collector user cannot command.
func TestCommandsAcrossAccounts(t *testing.T) {
	env := natsEnv(t)
	opts, err := server.ProcessConfigFile(natsClusterConf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
	opts.StoreDir, opts.NoSigs, opts.NoLog = t.TempDir(), true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	url := srv.ClientURL()
	conn := func(user, pw string) (*nats.Conn, chan error) {
		errs := make(chan error, 8)
		nc, err := nats.Connect(url, nats.UserInfo(user, pw),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc, errs
	}
	// the telemetry stream, as the collector creates it
	col, colErrs := conn("collector", env["SMELTER_NATS_COLLECTOR_PASSWORD"])
	js, err := jetstream.New(col)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, subjects := range map[string][]string{telemetry.TelemetryStream: telemetry.TelemetryStreamSubjects("*"),
		telemetry.AuditStream: telemetry.AuditStreamSubjects("*")} { // as nats-init creates them
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.FileStorage}); err != nil {
			t.Fatal(err)
		}
	}

	bank := modbustest.NewBank()
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 700)
	mb := modbustest.StartServer(t, bank)
	op, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := op.PublicKey()
	gatewaytest.Run(t, fmt.Sprintf(`gateway: {id: gw-site1-cmd, site: site1, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q, username: gw-site1, password_env: SMELTER_NATS_GW_SITE1_PASSWORD, create_stream: false}}
commands: {trusted_keys: [%s]}
devices:
  - id: sp-1
    class: generic
    modbus: {address: %q, unit_id: 1}
    points:
      - {signal: pressure_setpoint, table: holding, address: 0, type: uint16, scale: 0.001, unit: MPa, write: {min: 0.6, max: 0.9}}
`, url, pub, mb.Addr))

	mk := func(id string, v float64) *command.Command {
		now := time.Now()
		c := &command.Command{Schema: command.Schema, ID: id, Asset: "site1.generic.sp-1", Signal: "pressure_setpoint",
			Value: command.Num(v), Unit: "MPa", Requester: "accounts-test", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
		if err := c.Sign(op); err != nil {
			t.Fatal(err)
		}
		return c
	}
	commander, cmdErrs := conn("commander", env["SMELTER_NATS_COMMANDER_PASSWORD"])
	var res *command.Result
	n := 0
	wait.For(t, 20*time.Second, "gw-site1 to answer user commander across the accounts", func() bool {
		n++
		sctx, scancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer scancel()
		res, err = command.Send(sctx, commander, mk(fmt.Sprintf("acct-%d", n), 0.75))
		return err == nil
	})
	if res.Verdict != command.Verified || bank.Writes() != 1 {
		t.Fatalf("commander across accounts: %+v, %d writes", res, bank.Writes())
	}
	// audited into the SMELTER_AUDIT stream through the site's import
	s, err := js.Stream(ctx, telemetry.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	// (STREAM.INFO with a subject filter: the collector user reads the
	// trail through consumers, it has no STREAM.MSG.GET on SMELTER_AUDIT)
	const auditSubj = "smelter.v1.site1.generic.sp-1.audit"
	if info, err := s.Info(ctx, jetstream.WithSubjectFilter(auditSubj)); err != nil || info.State.Subjects[auditSubj] == 0 {
		t.Errorf("no audit record in %s: %v", telemetry.AuditStream, err)
	}
	// commander publishes commands only; the collector cannot command
	_ = commander.Publish("smelter.v1.site1.generic.sp-1.data", []byte("{}"))
	_ = commander.Flush()
	_ = col.Publish("smelter.v1.site1.generic.sp-1.cmd", []byte("{}"))
	_ = col.Flush()
	for who, ch := range map[string]chan error{"commander publishing data": cmdErrs, "collector publishing a command": colErrs} {
		select {
		case err := <-ch:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				t.Errorf("%s: %v, want a permissions violation", who, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: no permissions violation", who)
		}
	}
	if bank.Writes() != 1 {
		t.Errorf("%d writes", bank.Writes())
	}
}
