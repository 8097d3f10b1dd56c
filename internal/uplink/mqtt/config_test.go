package mqtt

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestConfigYAMLAndDefaults(t *testing.T) {
	src := `
url: ssl://broker:8883
client_id: edge-7
username: smelter
password_env: PW
tls: {ca_file: certs/ca.pem}
qos: 0
keepalive: 10s
max_inflight: 32
timeout: 3s
max_packet_size: 131072
`
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	c.SetDefaults("gw-1", "plant")
	c.ResolvePaths("/etc/smelter")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ClientID != "edge-7" || *c.QoS != 0 || c.Keepalive != 10*time.Second || c.MaxInflight != 32 ||
		c.Timeout != 3*time.Second || c.TLS.CAFile != "/etc/smelter/certs/ca.pem" || c.MaxPacketSize != 131072 {
		t.Fatalf("decoded %+v", c)
	}
	if c.StatusTopic() != "smelter/v1/plant/_gateway/gw-1/status" {
		t.Fatalf("status topic %s", c.StatusTopic())
	}
	var d Config
	d.SetDefaults("gw-1", "plant")
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.URL != DefaultURL || d.ClientID != "gw-1" || *d.QoS != 1 || d.Keepalive != 30*time.Second ||
		d.MaxInflight != 256 || d.Timeout != 5*time.Second || d.MaxPacketSize != DefaultMaxPacketSize {
		t.Fatalf("defaults %+v", d)
	}
}

func TestConfigValidate(t *testing.T) {
	two := 2
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"bad scheme", func(c *Config) { c.URL = "nats://x:1" }, `uplinks.mqtt.url: scheme "nats"`},
		{"tiny packets", func(c *Config) { c.MaxPacketSize = 100 }, "uplinks.mqtt.max_packet_size: 100 is outside 1024..268435460 bytes"},
		{"packets over the protocol's", func(c *Config) { c.MaxPacketSize = MaxPacketSizeLimit + 1 }, "uplinks.mqtt.max_packet_size:"},
		{"no host", func(c *Config) { c.URL = "tcp://" }, "uplinks.mqtt.url:"},
		{"creds in url", func(c *Config) { c.URL = "tcp://u:p@h:1" }, "uplinks.mqtt.url: credentials"},
		{"bad site", func(c *Config) { c.Site = "a/b" }, "uplinks.mqtt: gateway site"},
		{"both password sources", func(c *Config) { c.Username, c.PasswordEnv, c.PasswordFile = "u", "E", "f" }, "uplinks.mqtt.password_env:"},
		{"password without user", func(c *Config) { c.PasswordFile = "f" }, "uplinks.mqtt.username: required"},
		{"key without cert", func(c *Config) { c.TLS.KeyFile = "k" }, "uplinks.mqtt.tls.cert_file: required"},
		{"qos 2", func(c *Config) { c.QoS = &two }, "uplinks.mqtt.qos: 2 is not 0 or 1"},
		{"keepalive", func(c *Config) { c.Keepalive = time.Millisecond }, "uplinks.mqtt.keepalive:"},
		{"max_inflight", func(c *Config) { c.MaxInflight = 70000 }, "uplinks.mqtt.max_inflight: 70000"},
		{"timeout", func(c *Config) { c.Timeout = -1 }, "uplinks.mqtt.timeout:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			c.SetDefaults("gw", "site")
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSecretErrorsNameFieldNotValue(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"unset env", Config{Username: "u", PasswordEnv: "SMELTER_TEST_MQTT_UNSET"},
			[]string{"uplinks.mqtt.password_env", "SMELTER_TEST_MQTT_UNSET", "not set"}},
		{"missing file", Config{Username: "u", PasswordFile: dir + "/pw"},
			[]string{"uplinks.mqtt.password_file", dir + "/pw", "no such file"}},
		{"missing client cert", Config{URL: "ssl://h:1"}, nil},
	}
	cases[2].cfg.TLS.CertFile, cases[2].cfg.TLS.KeyFile = dir+"/c.pem", dir+"/c.key"
	cases[2].want = []string{"uplinks.mqtt.tls.cert_file", dir + "/c.pem"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults("gw", "site")
			_, err := New(tc.cfg, nil, nil)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestValidateReportsEveryProblem: Validate returns every problem, not the
// first (review finding 4); a bad gateway id is named once, not under a
// doubled path.
func TestValidateReportsEveryProblem(t *testing.T) {
	var c Config
	c.URL = "tcp://x:1883"
	c.SetDefaults("gw bad", "s")
	two := 2
	c.QoS = &two
	c.Keepalive = -time.Second
	c.MaxPacketSize = 10
	err := c.Validate()
	for _, want := range []string{`uplinks.mqtt: gateway id "gw bad"`, "uplinks.mqtt.qos: 2", "uplinks.mqtt.keepalive: -1s",
		"uplinks.mqtt.max_packet_size: 10"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestCheckLocal(t *testing.T) {
	c := Config{URL: "ssl://h:8883", Username: "u", PasswordEnv: "SMELTER_TEST_SURELY_UNSET"}
	c.TLS.CAFile = t.TempDir() + "/none.pem"
	err := c.CheckLocal()
	if err == nil || !strings.Contains(err.Error(), "uplinks.mqtt.password_env: environment variable SMELTER_TEST_SURELY_UNSET is not set") ||
		!strings.Contains(err.Error(), "uplinks.mqtt.tls.ca_file: read "+c.TLS.CAFile) {
		t.Fatalf("got %v", err)
	}
}
