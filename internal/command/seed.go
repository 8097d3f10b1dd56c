package command

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/secret"
)

// ErrSeedMode: a seed file is readable or writable by group or others.
var ErrSeedMode = errors.New("seed file is accessible by group or others (want mode 0600 or stricter)")

// LoadSeed reads the user nkey seed (S...) that signs commands from path,
// refusing a file whose mode grants anything to group or others
// (ErrSeedMode) and anything that is not a user seed. field names the
// configuration key for the error ("commands.seed_file"); no error ever
// quotes the file's content.
func LoadSeed(field, path string) (nkeys.KeyPair, error) {
	st, err := os.Stat(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: %s: %w: %w", field, path, err, secret.ErrMissing)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%s: %s has mode %04o: %w (chmod 600 %s)", field, path, m, ErrSeedMode, path)
	}
	s, err := secret.FromFile(field, path)
	if err != nil {
		return nil, err
	}
	seed := strings.TrimSpace(s.Reveal())
	if !strings.HasPrefix(seed, "SU") {
		return nil, fmt.Errorf("%s: %s does not hold a user nkey seed (SU...; create one with smelter-gateway command keygen)", field, path)
	}
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return nil, fmt.Errorf("%s: %s: not a valid user nkey seed", field, path)
	}
	return kp, nil
}
