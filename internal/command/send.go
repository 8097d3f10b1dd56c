package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Subject returns the subject a command is sent on:
// smelter.v1.<site>.<class>.<asset>.cmd (Asset holds the middle three).
func Subject(c *Command) string { return "smelter.v1." + c.Asset + ".cmd" }

// ErrNoAnswer: no gateway result arrived before ctx ended; the command may
// or may not have been executed (send it again with the same id to learn
// its outcome: the gateway never writes an id twice).
var ErrNoAnswer = errors.New("no answer from the gateway")

// ErrNoGateway: the NATS server answered that nobody listens on the
// command's subject (no responders: the gateway is down or disconnected,
// or no gateway has the asset). Unlike ErrNoAnswer the outcome is
// certain: nothing was executed, and the command is never executed later.
var ErrNoGateway = errors.New("no gateway listens for this asset's commands")

// Send publishes a signed command as a NATS request and waits for the
// gateway's Result until ctx ends. Replies that are not a Result are
// skipped: where a JetStream stream captures .cmd subjects (a SMELTER
// stream from before the audit stream, on smelter.v1.>; the default
// streams do not), JetStream acknowledges the request to the same inbox
// before the gateway answers. Commands are never queued: with no gateway
// listening, Send fails with ErrNoGateway at once (the server says so),
// and with ErrNoAnswer when ctx ends without a result.
func Send(ctx context.Context, nc *nats.Conn, c *Command) (*Result, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("command %s: %w", c.ID, err)
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("command %s: %w", c.ID, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(Subject(c), inbox, data); err != nil {
		return nil, fmt.Errorf("command %s: %w", c.ID, err)
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("command %s: %w on %s: nothing was executed", c.ID, ErrNoGateway, Subject(c))
		}
		if err != nil {
			return nil, fmt.Errorf("command %s: %w: %w", c.ID, ErrNoAnswer, err)
		}
		if !bytes.Contains(m.Data, []byte(ResultSchema)) {
			continue // a JetStream PubAck, or anything else
		}
		var r Result
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Schema != ResultSchema || r.ID != c.ID {
			continue
		}
		return &r, nil
	}
}
