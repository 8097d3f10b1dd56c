// Package secret reads credentials and TLS material named by a
// configuration (environment variables and files) for the uplinks and
// brokers. A Secret never prints its value: fmt, %v, %#v and log/slog all
// show "[redacted]", so a secret that reaches a log line by accident still
// does not leak. Errors name the configuration field and the variable or
// file, never the value.
package secret

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Secret holds a credential. The zero value is empty.
type Secret struct{ v string }

// New wraps a value (tests and programmatic configuration).
func New(v string) Secret { return Secret{v: v} }

// Reveal returns the value, for handing to a protocol library.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

const redacted = "[redacted]"

// String implements fmt.Stringer without revealing the value.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer without revealing the value.
func (s Secret) GoString() string { return redacted }

// LogValue implements slog.LogValuer without revealing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// Format implements fmt.Formatter so no verb (%s %v %q %x ...) reveals it.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// ErrMissing is wrapped by every error about a secret that could not be read.
var ErrMissing = errors.New("secret not available")

// FromEnv reads the environment variable name. field is the configuration
// key that named it, used in the error ("uplinks.nats.password_env").
// An unset or empty variable is an error.
func FromEnv(field, name string) (Secret, error) {
	v, ok := os.LookupEnv(name)
	if !ok {
		return Secret{}, fmt.Errorf("%s: environment variable %s is not set: %w", field, name, ErrMissing)
	}
	if v == "" {
		return Secret{}, fmt.Errorf("%s: environment variable %s is empty: %w", field, name, ErrMissing)
	}
	return Secret{v: v}, nil
}

// FromFile reads a secret file; one trailing newline (and carriage return)
// is removed. An unreadable or empty file is an error naming field and path.
// The error never quotes the file's content.
func FromFile(field, path string) (Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in our message
		}
		return Secret{}, fmt.Errorf("%s: read %s: %w: %w", field, path, err, ErrMissing)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return Secret{}, fmt.Errorf("%s: file %s is empty: %w", field, path, ErrMissing)
	}
	return Secret{v: v}, nil
}

// Resolve makes a relative path absolute against dir; "" stays "".
func Resolve(dir, path string) string {
	if path == "" || filepath.IsAbs(path) || dir == "" {
		return path
	}
	return filepath.Join(dir, path)
}
