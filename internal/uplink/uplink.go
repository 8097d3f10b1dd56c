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

// Rejection reasons (the reason label of the set-aside metric).
const (
	ReasonTooLarge = "too_large" // over the broker's message size limit
	ReasonRefused  = "refused"   // the broker refused it for good (e.g. a stream limit)
)

// RejectedError says the broker will never accept the message MsgID as it
// is: retrying it cannot succeed. Publish returns it for the first such
// message of a slice (messages before it may have been accepted); the
// caller sets that message aside and publishes the rest again.
type RejectedError struct {
	MsgID  string
	Reason string // ReasonTooLarge or ReasonRefused
	Err    error  // the broker's or client's error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("message %s rejected (%s): %v", e.MsgID, e.Reason, e.Err)
}

// Unwrap gives ErrRejected and the underlying error.
func (e *RejectedError) Unwrap() []error { return []error{ErrRejected, e.Err} }
