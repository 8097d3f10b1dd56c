package demo

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"

	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/command"
)

// Demo command identity (docs/commands.md): files in the data directory,
// new at every run.
const (
	commanderSeedFile = "commander.nk"   // user nkey seed that signs commands
	operatorTokenFile = "operator.token" // bearer token of the demo's operator
	operatorName      = "operator"
)

// demoCommands creates the demo's command identity in dataDir (absolute):
// a new user nkey, its seed in commander.nk, and a random operator token
// (32 bytes, hex) in operator.token, both mode 0600 and replacing those of
// an earlier run. It returns the gateway's commands block (trusting the
// key) and the collector's (signing with the seed for the one operator,
// on the collector's own NATS connection).
func demoCommands(dataDir string) (*command.Config, *collector.CommandsConfig, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, nil, fmt.Errorf("demo: command key: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, nil, fmt.Errorf("demo: command key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, nil, fmt.Errorf("demo: command key: %w", err)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, nil, fmt.Errorf("demo: operator token: %w", err)
	}
	seedPath, tokPath := filepath.Join(dataDir, commanderSeedFile), filepath.Join(dataDir, operatorTokenFile)
	if err := writeFresh(seedPath, append(seed, '\n')); err != nil {
		return nil, nil, err
	}
	if err := writeFresh(tokPath, []byte(hex.EncodeToString(tok)+"\n")); err != nil {
		return nil, nil, err
	}
	return &command.Config{TrustedKeys: []string{pub}},
		&collector.CommandsConfig{SeedFile: seedPath,
			Operators: []collector.Operator{{Name: operatorName, TokenFile: tokPath}}}, nil
}
