package command

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

// TestLoadSeed: a 0600 user seed loads; a group- or world-readable file,
// a missing file, a non-user seed and garbage are refused with the field
// and path, and no error quotes the seed.
func TestLoadSeed(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	acct, _ := nkeys.CreateAccount()
	aseed, _ := acct.Seed()
	dir := t.TempDir()
	file := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.nk", append(seed, '\n'), 0o600)
	got, err := LoadSeed("commands.seed_file", good)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := kp.PublicKey()
	if pub, _ := got.PublicKey(); pub != want {
		t.Errorf("public key %s, want %s", pub, want)
	}
	for _, c := range []struct {
		name, path, want string
		is               error
	}{
		{"world readable", file("open.nk", seed, 0o644), "has mode 0644", ErrSeedMode},
		{"group readable", file("group.nk", seed, 0o640), "has mode 0640", ErrSeedMode},
		{"missing", filepath.Join(dir, "none.nk"), "no such file", nil},
		{"account seed", file("acct.nk", aseed, 0o600), "does not hold a user nkey seed", nil},
		{"garbage", file("junk.nk", []byte("SUnot-a-seed"), 0o600), "not a valid user nkey seed", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadSeed("commands.seed_file", c.path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "commands.seed_file: "+c.path) {
				t.Fatalf("%v, want commands.seed_file: %s ... %s", err, c.path, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("%v is not %v", err, c.is)
			}
			if strings.Contains(err.Error(), string(seed[2:12])) || strings.Contains(err.Error(), string(aseed[2:12])) {
				t.Errorf("the error quotes the seed: %v", err)
			}
		})
	}
}
