package brokers_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
)

func TestNATSRestartKeepsPortAndStore(t *testing.T) {
	n, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	url := n.URL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") || strings.HasSuffix(url, ":-1") {
		t.Fatalf("URL %s", url)
	}
	put := func(data string) {
		nc, err := nats.Connect(n.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx := context.Background()
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "s.x", []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	put("one")
	n.Shutdown()
	if n.Running() {
		t.Fatal("running after Shutdown")
	}
	if _, err := nats.Connect(url, nats.Timeout(time.Second)); err == nil {
		t.Fatal("connected to a stopped server")
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if n.URL() != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, n.URL())
	}
	put("two")
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), "S")
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]string{1: "one", 2: "two"} {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil || string(m.Data) != want {
			t.Fatalf("seq %d = %v %v, want %q", seq, m, err, want)
		}
	}
	if err := n.Start(); err == nil {
		t.Fatal("second Start of a running server succeeded")
	}
}

func TestNATSAuthAndTLS(t *testing.T) {
	n, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir(), Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	if _, err := nats.Connect(n.URL(), nats.UserInfo("u", "wrong")); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("wrong password: %v", err)
	}
	nc, err := nats.Connect(n.URL(), nats.UserInfo("u", "p"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()

	pki := brokertest.NewPKI(t)
	tn, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir(), TLS: pki.ServerTLS(true), VerifyClients: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tn.Shutdown)
	nc, err = nats.Connect(tn.URL(), nats.Secure(pki.ClientTLS()))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if _, err := nats.Connect(tn.URL(), nats.Secure(&tlsNoCert)); err == nil {
		t.Fatal("connected without a client certificate")
	}
	if _, err := brokers.StartNATS(brokers.NATSOptions{}); err == nil {
		t.Fatal("StartNATS without StoreDir succeeded")
	}
}

func mqttConnect(url, id, user, pass string) error {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	tok.WaitTimeout(10 * time.Second)
	if tok.Error() == nil {
		c.Disconnect(0)
	}
	return tok.Error()
}

func TestMQTTRestartAuthAndProxy(t *testing.T) {
	m, err := brokers.StartMQTT(brokers.MQTTOptions{Username: "u", Password: "p*"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	url := m.URL()
	if err := mqttConnect(url, "a", "u", "p*"); err != nil {
		t.Fatal(err)
	}
	// No wildcard semantics in passwords.
	if err := mqttConnect(url, "b", "u", "p-anything"); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("wrong password: %v", err)
	}
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	if m.URL() != url {
		t.Fatalf("URL changed: %s -> %s", url, m.URL())
	}
	if err := mqttConnect(url, "c", "u", "p*"); err != nil {
		t.Fatal(err)
	}

	open, err := brokers.StartMQTT(brokers.MQTTOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = open.Close() })
	if err := mqttConnect(open.URL(), "anon", "", ""); err != nil {
		t.Fatal(err)
	}

	// The proxy forwards and Cut breaks the client's connection.
	p := brokertest.NewProxy(t, open.Addr())
	lost := make(chan error, 1)
	o := paho.NewClientOptions().AddBroker("tcp://" + p.Addr()).SetClientID("via-proxy").SetAutoReconnect(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	p.Cut()
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("connection survived Cut")
	}
}

func TestMQTTTLS(t *testing.T) {
	pki := brokertest.NewPKI(t)
	m, err := brokers.StartMQTT(brokers.MQTTOptions{TLS: pki.ServerTLS(false)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	o := paho.NewClientOptions().AddBroker(m.URL()).SetClientID("tls").SetTLSConfig(pki.ClientTLS())
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("tls connect: %v", tok.Error())
	}
	c.Disconnect(0)
}

var tlsNoCert = tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} //nolint:gosec // test: a client without a certificate
