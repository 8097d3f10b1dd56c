package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Handler processes one message. It returns when the message is fully
// processed; the source acknowledges it afterwards. An error means the
// message could not be processed now and should be redelivered; malformed
// messages are the handler's business (count, log, return nil).
type Handler func(ctx context.Context, subject string, data []byte) error

// Subjects the collector consumes.
var Subjects = []string{
	telemetry.SubjectPrefix + ".*.*.*." + string(telemetry.KindData),
	telemetry.SubjectPrefix + ".*.*.*." + string(telemetry.KindBirth),
	telemetry.SubjectPrefix + ".*.*.*." + string(telemetry.KindDeath),
}

// JetStream consumes a stream through a durable pull consumer.
type JetStream struct {
	Conn     *nats.Conn
	Stream   string
	Consumer string
	AckWait  time.Duration // default 30s
	Batch    int           // pull batch, default 256
	Log      *slog.Logger
}

// supportsFilterSubjects reports whether the server (>= 2.10) accepts
// several filter subjects on one consumer.
func supportsFilterSubjects(version string) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, _ := strconv.Atoi(parts[0])
	mnr, _ := strconv.Atoi(parts[1])
	return maj > 2 || maj == 2 && mnr >= 10
}

// Run creates or updates the durable consumer and feeds h until ctx ends.
func (s *JetStream) Run(ctx context.Context, h Handler) error {
	js, err := jetstream.New(s.Conn)
	if err != nil {
		return fmt.Errorf("ingest: jetstream: %w", err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       s.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		MaxAckPending: 8192,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if cc.AckWait == 0 {
		cc.AckWait = 30 * time.Second
	}
	// nats-server 2.9 knows one filter subject only: take the whole tree
	// there and skip the kinds the collector does not consume.
	if supportsFilterSubjects(s.Conn.ConnectedServerVersion()) {
		cc.FilterSubjects = Subjects
	} else {
		cc.FilterSubject = telemetry.SubjectPrefix + ".>"
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, s.Stream, cc)
	if err != nil {
		return fmt.Errorf("ingest: consumer %s on stream %s: %w", s.Consumer, s.Stream, err)
	}
	batch := s.Batch
	if batch <= 0 {
		batch = 256
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(batch))
	if err != nil {
		return fmt.Errorf("ingest: consume %s: %w", s.Consumer, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			s.Log.Warn("jetstream fetch", "err", err)
			continue
		}
		if err := h(ctx, msg.Subject(), msg.Data()); err != nil {
			if ctx.Err() != nil {
				return nil // not acked: redelivered to whoever consumes next
			}
			s.Log.Warn("message not processed, will be redelivered", "subject", msg.Subject(), "err", err)
			_ = msg.Nak()
			continue
		}
		if err := msg.Ack(); err != nil {
			s.Log.Warn("ack", "subject", msg.Subject(), "err", err)
		}
	}
}

// MQTT consumes telemetry through an MQTT shared subscription
// ($share/<group>/smelter/v1/+/+/+/<kind>), so several collectors split the
// stream. Messages are acknowledged (PUBACK) after the handler returned.
type MQTT struct {
	Options *mqtt.ClientOptions // broker, client id, credentials, TLS
	Group   string
	Log     *slog.Logger
}

// Topics returns the shared subscription filters of group.
func Topics(group string) []string {
	out := make([]string, 0, len(Subjects))
	for _, s := range Subjects {
		out = append(out, "$share/"+group+"/"+telemetry.Topic(strings.ReplaceAll(s, "*", "+")))
	}
	return out
}

// Run connects, subscribes and feeds h until ctx ends.
func (m *MQTT) Run(ctx context.Context, h Handler) error {
	o := *m.Options
	o.SetAutoAckDisabled(true)
	o.SetCleanSession(false)
	o.SetOrderMatters(true)
	filters := map[string]byte{}
	for _, t := range Topics(m.Group) {
		filters[t] = 1
	}
	handle := func(_ mqtt.Client, msg mqtt.Message) {
		if err := h(ctx, telemetry.SubjectFromTopic(msg.Topic()), msg.Payload()); err != nil {
			m.Log.Warn("mqtt message not processed", "topic", msg.Topic(), "err", err)
			return // not acknowledged: the broker redelivers on reconnect
		}
		msg.Ack()
	}
	o.SetOnConnectHandler(func(c mqtt.Client) {
		if tok := c.SubscribeMultiple(filters, handle); tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
			m.Log.Error("mqtt subscribe", "err", tok.Error())
		}
	})
	c := mqtt.NewClient(&o)
	tok := c.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("ingest: mqtt connect: %w", err)
		}
	case <-ctx.Done():
		return nil
	}
	<-ctx.Done()
	c.Disconnect(250)
	return nil
}
