package natsjs

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/uplink/uplinkmetrics"
)

// Metrics are the uplink's self-metrics, labelled uplink="nats": the set
// shared with the MQTT uplink (so both register in one registry) and the
// JetStream duplicate count.
type Metrics struct {
	uplinkmetrics.Set
	Duplicates prometheus.Counter
	// StreamCheckFailures counts failed stream checks (each retry), which
	// the log reports at most once per ConnectLogEvery.
	StreamCheckFailures prometheus.Counter
	// UnmatchedAcks counts replies on the PubAck subscription that answer
	// no message waiting for one (a second reply, a reply after its
	// Publish gave up, a subject not of ours): dropped, never guessed.
	UnmatchedAcks prometheus.Counter
	// WrongStreamAcks counts PubAcks that answer a message but name
	// another stream than the configured one: the message is not taken as
	// stored (its Publish fails, it stays in the spool and is sent again).
	WrongStreamAcks prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Set: uplinkmetrics.New("nats"),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_publish_duplicates_total",
			Help:        "Messages the broker acknowledged as duplicates of an earlier one (deduplicated).",
			ConstLabels: prometheus.Labels{"uplink": "nats"}}),
		StreamCheckFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_stream_check_failures_total",
			Help:        "Failed checks of the JetStream stream (missing, not covering the subjects, or no answer); each is retried with backoff.",
			ConstLabels: prometheus.Labels{"uplink": "nats"}}),
		UnmatchedAcks: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_unmatched_acks_total",
			Help:        "Replies to published messages that answer no message awaiting one (late after a timeout, repeated, or unknown): dropped.",
			ConstLabels: prometheus.Labels{"uplink": "nats"}}),
		WrongStreamAcks: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_wrong_stream_acks_total",
			Help:        "PubAcks naming another stream than the configured one: the message is not taken as stored; it stays in the spool and is sent again.",
			ConstLabels: prometheus.Labels{"uplink": "nats"}})}
	if reg != nil {
		reg.MustRegister(append(m.Collectors(), m.Duplicates, m.StreamCheckFailures, m.UnmatchedAcks, m.WrongStreamAcks)...)
	}
	return m
}
