package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/command"
)

const commandUsage = `usage:
  smelter-gateway command keygen -seed FILE
      create a user nkey, write its seed to FILE (mode 0600, never overwritten) and print
      its public key: the value for a gateway's commands.trusted_keys
  smelter-gateway command send -url URL -seed FILE -asset SITE.CLASS.ASSET -signal S -value V -requester WHO [flags]
      sign a command with the seed and send it; print the gateway's result as JSON.
      Exit 0: verified or written (written: the read-back differs or failed; check
      "verdict": "verified" where the value matters); 1: rejected, failed (a reason
      starting "outcome unknown": the device may hold the value, read it first), no
      gateway listening (nothing executed) or no answer (resend with -id to learn it).
      NATS identity: -creds FILE, or -user NAME -password-env VAR; -ca FILE for TLS.

docs/commands.md explains the model, the keys and the permissions.
`

func cmdCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, commandUsage)
		return 2
	}
	switch args[0] {
	case "keygen":
		return cmdKeygen(args[1:], stdout, stderr)
	case "send":
		return cmdSend(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, commandUsage)
		return 0
	}
	fmt.Fprintf(stderr, "smelter-gateway command: unknown subcommand %q\n\n%s", args[0], commandUsage)
	return 2
}

func cmdKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("command keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seedFile := fs.String("seed", "", "file to write the new seed to (must not exist)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *seedFile == "" {
		fmt.Fprintln(stderr, "smelter-gateway command keygen: -seed FILE is required")
		return 2
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		fmt.Fprintf(stderr, "smelter-gateway command keygen: %v\n", err)
		return 1
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	f, err := os.OpenFile(*seedFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.Write(append(seed, '\n'))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "smelter-gateway command keygen: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, pub)
	return 0
}

func cmdSend(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("command send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "nats://127.0.0.1:4222", "NATS server URL (tls:// for TLS)")
	creds := fs.String("creds", "", "NATS credentials file of the command identity")
	user := fs.String("user", "", "NATS user (with -password-env)")
	passEnv := fs.String("password-env", "", "environment variable holding the NATS password")
	ca := fs.String("ca", "", "CA certificate file to verify the server")
	seedFile := fs.String("seed", "", "user nkey seed file that signs the command (required)")
	asset := fs.String("asset", "", "target as <site>.<class>.<asset> (required)")
	sig := fs.String("signal", "", "signal to set (required)")
	value := fs.String("value", "", "value: a number, or a state label (required)")
	unit := fs.String("unit", "", "unit of a numeric value (UCUM; default the signal's canonical unit)")
	requester := fs.String("requester", "", "who asks, a person or service, for the audit (required)")
	id := fs.String("id", "", "command id (default random); resend with the same id to learn an outcome")
	ttl := fs.Duration("ttl", time.Minute, "how long the command stays valid")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the result")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "smelter-gateway command send: "+format+"\n", a...)
		return 1
	}
	if *seedFile == "" || *asset == "" || *sig == "" || *value == "" || *requester == "" {
		fmt.Fprintln(stderr, "smelter-gateway command send: -seed, -asset, -signal, -value and -requester are required")
		return 2
	}
	seed, err := os.ReadFile(*seedFile)
	if err != nil {
		return fail("%v", err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return fail("%s: %v", *seedFile, err)
	}
	if *id == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		*id = hex.EncodeToString(b)
	}
	v := command.Label(*value)
	if f, err := strconv.ParseFloat(*value, 64); err == nil {
		v = command.Num(f)
	}
	now := time.Now()
	c := &command.Command{Schema: command.Schema, ID: *id, Asset: *asset, Signal: *sig, Value: v, Unit: *unit,
		Requester: *requester, IssuedAt: now, ExpiresAt: now.Add(*ttl)}
	if err := c.Sign(kp); err != nil {
		return fail("%v", err)
	}
	opts := []nats.Option{nats.Name("smelter-gateway command"),
		// the server's asynchronous errors (a permissions violation on the
		// command's subject) as this command's own lines, not nats.go's raw
		// one (its default handler writes to os.Stderr)
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			fmt.Fprintf(stderr, "smelter-gateway command send: %v\n", err)
		})}
	if *creds != "" {
		opts = append(opts, nats.UserCredentials(*creds))
	}
	if *user != "" {
		opts = append(opts, nats.UserInfo(*user, os.Getenv(*passEnv)))
	}
	if *ca != "" {
		opts = append(opts, nats.RootCAs(*ca))
	}
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		return fail("connect: %v", err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := command.Send(ctx, nc, c)
	if err != nil {
		if errors.Is(err, command.ErrNoGateway) {
			return fail("%v", err)
		}
		if errors.Is(err, command.ErrNoAnswer) {
			return fail("%v (id %s: resend with -id %s to learn its outcome)", err, c.ID, c.ID)
		}
		return fail("%v", err)
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Fprintln(stdout, string(out))
	if res.Verdict == command.Verified || res.Verdict == command.Written {
		return 0
	}
	return 1
}
