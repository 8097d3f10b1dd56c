package gwconfig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/confload"
)

// Fake secrets, shaped as real ones (a shadow line, a NATS user JWT and
// nkey seed): none of their text may appear in an error, which goes to a
// journal shipped off the machine (review finding 7).
const (
	fakeShadow = "root:$6$Qe7yXb2f$kJ8dF0uNnZ1s9wV3pLxYtR4mC6aH2gE5iO7qW0zU.:20228:0:99999:7:::\n" +
		"daemon:*:20228:0:99999:7:::\n" +
		"operator:$y$j9T$abcDEFghiJKLmnoPQRstu/$VWXyz0123456789ABCDEFghijKLMnopQRStuv:20228:0:99999:7:::\n"
	fakeJWT   = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJGQUtFRkFLRUZBS0UifQ.c2lnbmF0dXJlZmFrZQ"
	fakeSeed  = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU"
	fakeCreds = "-----BEGIN NATS USER JWT-----\n" + fakeJWT + "\n------END NATS USER JWT------\n\n" +
		"************************* IMPORTANT *************************\n" +
		"NKEY Seed printed below can be used to sign and prove identity.\n" +
		"NKEYs are sensitive and should be treated as secrets.\n\n" +
		"-----BEGIN USER NKEY SEED-----\n" + fakeSeed + "\n------END USER NKEY SEED------\n"
)

func TestTemplateErrorsNeverEchoFileContent(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("shadow", fakeShadow)
	write("gw.creds", fakeCreds)
	write("gw.yaml", `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: a
    class: motor
    template: shadow
    modbus: {address: "127.0.0.1:502", unit_id: 1}
  - id: b
    class: motor
    template: gw.creds
    modbus: {address: "127.0.0.1:502", unit_id: 2}
`)
	_, err := load(filepath.Join(dir, "gw.yaml"))
	if err == nil {
		t.Fatal("loaded")
	}
	msg := err.Error()
	for _, secret := range []string{"root", "daemon", "operator", "$6$", "20228", "eyJ", "SUAM", fakeJWT[:20], fakeSeed[:12], "BEGIN"} {
		if strings.Contains(msg, secret) {
			t.Errorf("the error shows %q:\n%s", secret, msg)
		}
	}
	// it still says where and what is wrong
	for _, want := range []string{
		filepath.Join(dir, "shadow") + ":1: 3 keys that are not field names, at lines 1, 2, 3 (text not shown)",
		filepath.Join(dir, "gw.creds") + ":1: want a mapping of fields, got plain text (not shown)",
		"devices[0].template: template shadow is invalid",
		"devices[1].template: template gw.creds is invalid",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
}

// TestOddKeysInAConfigAreNotEchoed: a key that is no field name inside a
// device block is reported at its line without its text; a long key is
// not quoted either; a plausible misspelt key is still named.
func TestOddKeysInAConfigAreNotEchoed(t *testing.T) {
	long := strings.Repeat("k", 100)
	_, err := loadBytes("gw.yaml", []byte(`gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: a
    class: motor
    "password=hunter2": x
    `+long+`: y
    poll_intervall: 1s
    modbus: {address: "127.0.0.1:502", unit_id: 1}
    points:
      - {signal: voltage_a, table: holding, address: 0, type: uint16, unit: V}
`))
	es := confload.AsErrors(err)
	msg := err.Error()
	if strings.Contains(msg, "hunter2") || strings.Contains(msg, long[:70]) {
		t.Fatalf("echoed:\n%s", msg)
	}
	if !strings.Contains(msg, "gw.yaml:6: devices[0]: 2 keys that are not field names, at lines 6, 7 (text not shown)") ||
		!strings.Contains(msg, "gw.yaml:8: devices[0].poll_intervall: unknown field (did you mean poll_interval?)") || len(es) != 2 {
		t.Fatalf("got:\n%s", msg)
	}
}

// TestOversizedTemplateRefused: a template past confload.MaxFileSize is
// refused with a clear error before it is parsed.
func TestOversizedTemplateRefused(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "huge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(confload.MaxFileSize + 1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	_ = f.Close()
	path := writeConfig(t, "  - {id: a, class: motor, template: "+filepath.Join(dir, "huge.yaml")+", modbus: {address: \"127.0.0.1:502\", unit_id: 1}}\n")
	_, err = load(path)
	if err == nil || !strings.Contains(err.Error(), "devices[0].template: cannot read template: file is 16777217 bytes, above the 16 MiB limit of a configuration file") {
		t.Fatalf("got %v", err)
	}
}
