package dashboard

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/telemetry"
)

// ErrReconnecting is what a Commander's error wraps (errors.Is) when the
// collector's connection to NATS is being re-established: its requests
// fail at once then, and the API answers 503 with Retry-After
// (reconnectRetryAfter) and this message, so a client retries rather than
// reads a client library's "nats: outbound buffer limit exceeded".
var ErrReconnecting = errors.New("collector is reconnecting to NATS, retry")

// reconnectRetryAfter is the Retry-After (s) of an answer to a request
// that failed on ErrReconnecting: the collector tries to reconnect every
// second.
const reconnectRetryAfter = "2"

// writeCommanderErr writes a Commander's error: 503 with Retry-After for
// ErrReconnecting, else code.
func writeCommanderErr(w http.ResponseWriter, code int, err error) {
	if errors.Is(err, ErrReconnecting) {
		w.Header().Set("Retry-After", reconnectRetryAfter)
		code = http.StatusServiceUnavailable
	}
	writeErr(w, code, "", err.Error())
}

// Commander is the collector's command service as the API uses it
// (docs/commands.md): Send signs and sends one command and returns the
// gateway's result (command.ErrNoAnswer when none came); Audit reads an
// asset's audit records, newest first. Their errors wrap ErrReconnecting
// when they failed because the collector is reconnecting to NATS.
type Commander interface {
	Send(ctx context.Context, req CommandRequest) (*command.Result, error)
	Audit(ctx context.Context, site, asset string, before uint64, limit int) (AuditPage, error)
	// Sends reports whether the service can send (a seed and operators
	// are configured); the audit trail is served either way.
	Sends() bool
	// Refused appends a rejected record for a command the API itself
	// refused (a viewer's) to the asset's audit subject, so the audit
	// stream holds every attempt, not only those that reached a gateway.
	Refused(ctx context.Context, req CommandRequest, reason string) error
}

// CommandRequest is one operator's command as the API takes it; the
// service fills the rest (issued_at, expires_at, the signature).
type CommandRequest struct {
	ID        string        // "" : the service makes one; a retry passes the id it got
	Site      string        // asset's site token
	Class     string        // asset's class token
	Asset     string        // asset id
	Signal    string        // catalog signal
	Value     command.Value // number or state label
	Unit      string        // UCUM; "" = the signal's canonical unit
	Requester string        // the operator's name
}

// AuditRecord is one audit record of the stream with its stream sequence.
type AuditRecord struct {
	Seq uint64 `json:"seq"`
	command.Result
}

// AuditPage is a page of an asset's audit trail, newest first. Before,
// when not 0, is the `before` of the next (older) page.
type AuditPage struct {
	Records []AuditRecord `json:"records"`
	Before  uint64        `json:"before,omitempty"`
}

// Roles of an API caller.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
)

type ctxKey struct{}

// caller is who made a request: role and, for an operator, the name.
type caller struct{ role, name string }

func callerOf(r *http.Request) caller {
	if c, ok := r.Context().Value(ctxKey{}).(caller); ok {
		return c
	}
	return caller{role: RoleViewer}
}

// identify maps a request's bearer token to a caller: an operator's token
// (Options.Operators) makes an operator, the viewer token (Options.Token)
// or, with no viewer token, no token at all a viewer; ok is false for a
// missing or wrong token where one is required.
func (s *Server) identify(r *http.Request) (caller, bool) {
	a := r.Header.Get("Authorization")
	const p = "Bearer "
	tok := ""
	if len(a) > len(p) && strings.EqualFold(a[:len(p)], p) {
		tok = strings.TrimSpace(a[len(p):])
	}
	found := ""
	for t, name := range s.opts.Operators { // every token compared, in constant time each
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
			found = name
		}
	}
	switch {
	case tok != "" && found != "":
		return caller{RoleOperator, found}, true
	case s.opts.Token == "":
		return caller{role: RoleViewer}, true
	case tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) == 1:
		return caller{role: RoleViewer}, true
	}
	return caller{}, false
}

// SessionOut is GET /api/v1/session: who the caller is and what it may do.
type SessionOut struct {
	Role     string `json:"role"`           // viewer or operator
	Name     string `json:"name,omitempty"` // the operator's name
	Commands bool   `json:"commands"`       // the caller may send commands now
	Audit    bool   `json:"audit"`          // the audit trail is served
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	if q := newQuery(r); !q.ok(w) {
		return
	}
	c := callerOf(r)
	cm := s.opts.Commands
	writeJSON(w, http.StatusOK, SessionOut{Role: c.role, Name: c.name, Audit: cm != nil,
		Commands: c.role == RoleOperator && cm != nil && cm.Sends()})
}

// CommandIn is the body of POST /api/v1/assets/{site}/{id}/commands.
type CommandIn struct {
	ID     string          `json:"id,omitempty"`
	Class  string          `json:"class,omitempty"` // needed only where this replica does not track the asset
	Signal string          `json:"signal"`
	Value  json.RawMessage `json:"value"`
	Unit   string          `json:"unit,omitempty"`
}

// maxCommandBody bounds a command request's body.
const maxCommandBody = 4096

func (s *Server) sendCommand(w http.ResponseWriter, r *http.Request) {
	if q := newQuery(r); !q.ok(w) {
		return
	}
	c := callerOf(r)
	if c.role != RoleOperator {
		const why = "viewers cannot send commands: an operator's token is required (commands.operators in the collector's configuration)"
		s.auditViewer(r, c, why)
		writeErr(w, http.StatusForbidden, "", why)
		return
	}
	cm := s.opts.Commands
	if cm == nil || !cm.Sends() {
		writeErr(w, http.StatusServiceUnavailable, "", "this collector sends no commands (no commands.seed_file and commands.operators)")
		return
	}
	site, id := r.PathValue("site"), r.PathValue("id")
	for _, p := range [][2]string{{"site", site}, {"id", id}} {
		if !telemetry.ValidToken(p[1]) {
			writeErr(w, http.StatusBadRequest, p[0], fmt.Sprintf("%q is not a valid token (1-64 of A-Z a-z 0-9 _ -)", p[1]))
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxCommandBody+1))
	if err != nil || len(body) > maxCommandBody {
		writeErr(w, http.StatusBadRequest, "", fmt.Sprintf("the body must be JSON of at most %d bytes", maxCommandBody))
		return
	}
	var in CommandIn
	if err := command.DecodeJSON(body, &in); err != nil {
		writeErr(w, http.StatusBadRequest, "", "body: "+err.Error())
		return
	}
	var v command.Value
	switch {
	case !telemetry.ValidToken(in.Signal):
		writeErr(w, http.StatusBadRequest, "signal", fmt.Sprintf("%q is not a signal name", in.Signal))
		return
	case len(in.Value) == 0:
		writeErr(w, http.StatusBadRequest, "value", "missing: a number or a state label")
		return
	case v.UnmarshalJSON(in.Value) != nil:
		writeErr(w, http.StatusBadRequest, "value", "want a number or a state label")
		return
	case in.ID != "" && (len(in.ID) > 128 || strings.ContainsFunc(in.ID, func(r rune) bool { return r <= ' ' || r == 0x7f })):
		writeErr(w, http.StatusBadRequest, "id", "must be 1..128 printable characters without spaces")
		return
	case in.Class != "" && !telemetry.ValidToken(in.Class):
		writeErr(w, http.StatusBadRequest, "class", fmt.Sprintf("%q is not a valid token", in.Class))
		return
	}
	class := in.Class
	if a, ok := s.src.Asset(site, id); ok {
		class = a.Class
	} else if class == "" {
		writeErr(w, http.StatusNotFound, "", fmt.Sprintf("no asset %s/%s on this collector (give its class to command it anyway)", site, id))
		return
	}
	res, err := cm.Send(r.Context(), CommandRequest{ID: in.ID, Site: site, Class: class, Asset: id, Signal: in.Signal,
		Value: v, Unit: in.Unit, Requester: c.name})
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, command.ErrNoAnswer) {
			code = http.StatusGatewayTimeout
		}
		writeCommanderErr(w, code, err)
		return
	}
	s.opts.Log.Info("command", "operator", c.name, "site", site, "asset", id, "signal", in.Signal, "id", res.ID, "verdict", res.Verdict)
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "limit", "before")
	limit := q.intRange("limit", 50, 1, 500)
	var before uint64
	if b := q.v.Get("before"); b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil || n == 0 {
			q.fail("before", fmt.Sprintf("%q is not a stream sequence (a positive integer)", b))
		}
		before = n
	}
	if !q.ok(w) {
		return
	}
	site, id := r.PathValue("site"), r.PathValue("id")
	for _, p := range [][2]string{{"site", site}, {"id", id}} {
		if !telemetry.ValidToken(p[1]) {
			writeErr(w, http.StatusBadRequest, p[0], fmt.Sprintf("%q is not a valid token (1-64 of A-Z a-z 0-9 _ -)", p[1]))
			return
		}
	}
	if s.opts.Commands == nil {
		writeErr(w, http.StatusServiceUnavailable, "", "this collector reads no audit stream (no commands: block in its configuration)")
		return
	}
	if !s.take(w, r, "audit") {
		return
	}
	page, err := s.opts.Commands.Audit(r.Context(), site, id, before, limit)
	if err != nil {
		writeCommanderErr(w, http.StatusBadGateway, err)
		return
	}
	if page.Records == nil {
		page.Records = []AuditRecord{}
	}
	writeJSON(w, http.StatusOK, page)
}

// auditViewer records a viewer's command attempt on a known asset in the
// audit stream (Commander.Refused), with signal "(invalid)" where the body
// names none that could be one; an unknown asset is only logged. The viewer's attempt is unauthorized
// activity: the record's reason names the permission, which raises an
// unauthorized_command alert like a gateway's refusal.
func (s *Server) auditViewer(r *http.Request, c caller, why string) {
	cm := s.opts.Commands
	site, id := r.PathValue("site"), r.PathValue("id")
	var in CommandIn
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxCommandBody))
	_ = json.Unmarshal(body, &in)
	a, known := s.src.Asset(site, id)
	s.opts.Log.Warn("command refused: viewer", "site", site, "asset", id, "known_asset", known)
	if cm == nil || !known {
		return
	}
	if !telemetry.ValidToken(in.Signal) { // still audited: probing must not stay invisible
		in.Signal = "(invalid)"
	}
	reason := "permission denied by the collector: " + why
	client, _ := clientKey(r, s.opts.RateLimit.TrustedProxies) // a malformed header: the unspecified address's bucket
	switch s.refused.admit(client) {
	case refusedSummary:
		reason += fmt.Sprintf("; this client exceeds %d refused commands a minute (burst %d): its further refused commands are "+
			"not recorded one by one until it slows down, only counted (smelter_collector_http_rate_limited_total{endpoint=\"refused_command\"})",
			RefusedAuditPerMinute, RefusedAuditBurst)
	case refusedUnrecorded:
		if f := s.opts.RateLimit.OnLimited; f != nil {
			f("refused_command")
		}
		return
	}
	var v command.Value
	_ = v.UnmarshalJSON(in.Value)
	req := CommandRequest{Site: site, Class: a.Class, Asset: id, Signal: in.Signal, Value: v, Unit: in.Unit, Requester: "viewer"}
	if c.name != "" {
		req.Requester = "viewer " + c.name
	}
	if err := cm.Refused(r.Context(), req, reason); err != nil {
		s.opts.Log.Error("a viewer's command attempt could not be audited", "site", site, "asset", id, "err", err)
	}
}

// The audit records of commands the collector refuses itself (a viewer's,
// an anonymous client's where the API has no viewers' token) are limited
// per client (review16 M-4): the audit stream keeps records for years and
// cannot be purged, so a read-only client must not be able to fill it.
// Within the limit every attempt is recorded; the first attempt beyond it
// is recorded with a reason saying so (one summary record per episode),
// the further ones are only counted until the client's bucket refills.
// Operators' commands are never limited here (the gateway audits them).
const (
	RefusedAuditPerMinute = 10
	RefusedAuditBurst     = 20
)

// What refusedAudit.admit decides for one refused command.
const (
	refusedRecorded   = iota // record it
	refusedSummary           // record it, saying further ones are only counted
	refusedUnrecorded        // count it only
)

// refusedAudit is the per-client limit of refused commands' audit records.
type refusedAudit struct {
	lim  *limiter
	mu   sync.Mutex
	over map[netip.Addr]bool // clients beyond the limit whose summary is recorded
}

func newRefusedAudit(rl RateLimit) *refusedAudit {
	return &refusedAudit{lim: newLimiter(RateLimit{PerSecond: RefusedAuditPerMinute / 60.0, Burst: RefusedAuditBurst,
		TrustedProxies: rl.TrustedProxies, Now: rl.Now}), over: map[netip.Addr]bool{}}
}

// admit takes a token of client c's bucket and says what becomes of its
// refused command's audit record.
func (a *refusedAudit) admit(c netip.Addr) int {
	ok, _ := a.lim.allow(c)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case ok:
		delete(a.over, c)
		return refusedRecorded
	case a.over[c] || len(a.over) >= MaxRateClients:
		return refusedUnrecorded
	}
	a.over[c] = true
	return refusedSummary
}
