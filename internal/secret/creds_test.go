package secret

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// userCreds returns a decorated user JWT and seed signed by a new account,
// as `nsc generate creds` writes them, and the JWT and seed alone.
func userCreds(t *testing.T) (file, token string, seed []byte) {
	t.Helper()
	acct, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	token, err = jwt.NewUserClaims(pub).Encode(acct)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ = user.Seed()
	b, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), token, seed
}

func TestCredsFile(t *testing.T) {
	good, token, seed := userCreds(t)
	other, _, otherSeed := userCreds(t)
	onlyJWT := good[:strings.Index(good, "************************* IMPORTANT")]
	onlySeed := good[strings.Index(good, "-----BEGIN USER NKEY SEED"):]
	mixed := strings.Replace(good, string(seed), string(otherSeed), 1)
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"good", good, ""},
		{"jwt only", onlyJWT, "no user nkey seed"},
		{"seed only", onlySeed, "no user JWT"},
		{"seed of another user", mixed, "the nkey seed is not the key of the JWT's user"},
		{"a password", "hunter2hunter2\n", "no user JWT"},
		{"empty", "", "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".creds")
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			err := CredsFile("nats.creds_file", p)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "nats.creds_file: ") || !strings.Contains(err.Error(), p) {
				t.Fatalf("err = %v, want the field, the file and %q", err, tc.want)
			}
			if !errors.Is(err, ErrMissing) {
				t.Errorf("err = %v, want ErrMissing wrapped", err)
			}
			for _, s := range []string{token, string(seed), string(otherSeed), "hunter2", other[40:80]} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("err = %v: shows the file's content", err)
				}
			}
		})
	}
}
