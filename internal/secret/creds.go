package secret

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
)

// CredsFile checks a NATS credentials file (nsc's `.creds`: a decorated
// user JWT and the user's nkey seed) before anything connects: readable,
// not empty, a user JWT, a user seed (SU...), and the seed the JWT's user
// key. Without it a file with the JWT or the seed missing was accepted by
// `-t` and failed only at connect time, as an authorization error of the
// server. field names the configuration key ("nats.creds_file"); errors
// name it and the file, never the file's content.
func CredsFile(field, path string) error {
	s, err := FromFile(field, path)
	if err != nil {
		return err
	}
	b := []byte(s.Reveal())
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %s: %s (a NATS credentials file holds a user JWT and its nkey seed, as `nsc generate creds` writes): %w",
			field, path, fmt.Sprintf(format, a...), ErrMissing)
	}
	if !strings.Contains(s.Reveal(), "BEGIN NATS USER JWT") {
		return bad("no user JWT (no -----BEGIN NATS USER JWT----- block)")
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return bad("the user JWT cannot be read")
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return bad("the user JWT is not a valid user JWT")
	}
	kp, err := jwt.ParseDecoratedUserNKey(b)
	if err != nil {
		return bad("no user nkey seed (no -----BEGIN USER NKEY SEED----- block with an SU... seed)")
	}
	pub, err := kp.PublicKey()
	if err != nil || pub != uc.Subject {
		return bad("the nkey seed is not the key of the JWT's user %s", uc.Subject)
	}
	return nil
}
