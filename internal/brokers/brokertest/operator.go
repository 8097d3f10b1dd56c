package brokertest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Operator is an embedded nats-server in operator mode: an operator JWT,
// a system account and an account with JetStream, their JWTs in a memory
// resolver.
type Operator struct {
	Server *server.Server
	// Creds is a creds file (user JWT and nkey seed) of a user of the
	// JetStream account; ForeignCreds one of a user signed by an account
	// the server does not know.
	Creds, ForeignCreds string
}

// URL is the server's client URL.
func (o *Operator) URL() string { return o.Server.ClientURL() }

// OperatorNATS starts an operator-mode nats-server with JetStream and shuts
// it down with the test.
func OperatorNATS(t testing.TB) *Operator {
	t.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "smelter-test"
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	opc, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	account := func(name string, js bool) (nkeys.KeyPair, string, string) {
		akp, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		apub, _ := akp.PublicKey()
		ac := jwt.NewAccountClaims(apub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		ajwt, err := ac.Encode(okp)
		if err != nil {
			t.Fatal(err)
		}
		return akp, apub, ajwt
	}
	dir := t.TempDir()
	user := func(akp nkeys.KeyPair, file string) string {
		ukp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		ujwt, err := uc.Encode(akp)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	akp, apub, ajwt := account("APP", true)
	_, spub, sjwt := account("SYS", false)
	res := &server.MemAccResolver{}
	for k, v := range map[string]string{apub: ajwt, spub: sjwt} {
		if err := res.Store(k, v); err != nil {
			t.Fatal(err)
		}
	}
	ns := Server(t, &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		TrustedOperators: []*jwt.OperatorClaims{opc}, AccountResolver: res, SystemAccount: spub,
		JetStream: true, StoreDir: t.TempDir()})
	strange, _, _ := account("UNKNOWN", false)
	return &Operator{Server: ns, Creds: user(akp, "user.creds"), ForeignCreds: user(strange, "foreign.creds")}
}
