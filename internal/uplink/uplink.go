// Package uplink holds what every uplink (natsjs, mqtt) shares with the
// forwarder that drives it: the error that says a message can never be
// delivered, so the forwarder sets it aside instead of retrying it forever.
// The uplink packages themselves never import each other.
package uplink

import (
	"errors"
	"fmt"
)

// ErrRejected is wrapped by every RejectedError; use errors.Is.
var ErrRejected = errors.New("rejected permanently")

// ReasonTooLarge is the rejection reason (the reason label of the
// set-aside metric) of a message over the broker's size limit: the
// server's max_payload, a stream's max_msg_size, the MQTT broker's maximum
// packet size.
const ReasonTooLarge = "too_large"

// RejectedError says the broker will never accept the message MsgID as it
// is: retrying it cannot succeed. Publish returns it for the first such
// message of a slice (messages before it may have been accepted); the
// caller sets that message aside and publishes the rest again.
type RejectedError struct {
	MsgID  string
	Reason string // ReasonTooLarge
	Err    error  // the broker's or client's error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("message %s rejected (%s): %v", e.MsgID, e.Reason, e.Err)
}

// Unwrap gives ErrRejected and the underlying error.
func (e *RejectedError) Unwrap() []error { return []error{ErrRejected, e.Err} }
