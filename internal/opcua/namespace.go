package opcua

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Namespace indexes and URIs (docs/opcua.md, "Namespace indexes and
// URIs"). A node id's ns=<index> is a position in the server's
// NamespaceArray (Server_NamespaceArray, i=2255), which a server may
// reorder when it restarts (node-opcua registers namespaces in the order
// its address space is built): the same ns=2;s=X then names another
// node, whose value would be published as the configured point's. The
// driver therefore
//   - resolves nsu=<uri>; ids against the NamespaceArray read at every
//     session start;
//   - pins each ns=<index> (index > 0) of the configuration to the URI the
//     server had at that index at the device's first session, persisted
//     in <data_dir>/namespaces/<device>.json (Config.DataDir), and at every
//     later session start (a reconnect, a restarted gateway or worker)
//     reads the NamespaceArray again: an index whose URI moved is read at
//     the URI's new index (WARN once, smelter_opcua_namespace_remaps_total),
//     an index whose URI is gone is not read at all: its points are
//     published bad StatusNodeIDUnknown.

// StatusNodeIDUnknown (BadNodeIdUnknown) is the status of the points whose
// namespace is not on the server this session: an nsu=<uri>; id whose URI
// is not in the NamespaceArray, or an ns=<index> id whose pinned URI is
// gone (never a node read under a stale index).
const StatusNodeIDUnknown = uint32(0x80340000)

// errNamespaceGone is wrapped by the error of a node id whose namespace is
// not on the server this session.
var errNamespaceGone = errors.New("namespace not on the server")

// nsPins is a device's pin file: the namespace URI each ns=<index> of its
// configuration meant at its first session with Endpoint.
type nsPins struct {
	Endpoint string            `json:"endpoint"`
	URIs     map[uint16]string `json:"uris"` // index -> namespace URI
}

// nsState is what a Client keeps of namespaces across sessions: its pins
// (loaded from the pin file at the first session) and, per pinned index,
// where its URI was at the last session start (-1: gone), so a move is
// logged and counted once, not at every reconnect.
type nsState struct {
	pins    *nsPins
	dirty   bool // pins not yet written (a failed write is retried at the next session)
	lastAt  map[uint16]int
	saveErr string // the last failed write's error, logged once
	// uriOn: whether each nsu= URI was on the server at the last session
	// start (its absence logged once)
	uriOn map[string]bool
}

// nsText is a NamespaceArray for a log line or an error, clipped: the
// server's text, of any length.
func nsText(arr []string) string { return logging.Clip(fmt.Sprint(arr), 512) }

// usesIndexes reports whether a point's node id or method ids name a
// namespace by an index above 0.
func usesIndexes(ps []Point) bool {
	indexed := func(s string) bool {
		idx, _, ok := nsIndex(s)
		return ok && idx > 0
	}
	for i := range ps {
		p := &ps[i]
		if indexed(p.NodeID) || p.Method != nil && (indexed(p.Method.Object) || indexed(p.Method.Method)) {
			return true
		}
	}
	return false
}

// nsIndex is s's ns=<index> and the rest after its ';' (ok false for
// other forms: no namespace, nsu=).
func nsIndex(s string) (idx uint16, rest string, ok bool) {
	if !strings.HasPrefix(s, "ns=") {
		return 0, "", false
	}
	n, rest, found := strings.Cut(s[len("ns="):], ";")
	if !found {
		return 0, "", false
	}
	v, err := strconv.ParseUint(n, 10, 16)
	if err != nil {
		return 0, "", false
	}
	return uint16(v), rest, true
}

// nsURI is s's nsu=<uri> (percent-decoded, OPC 10000-6 5.3.1.11: ';' is
// %3B, '%' is %25) and the rest after its ';' (ok false for other forms).
func nsURI(s string) (uri, rest string, ok bool, err error) {
	if !strings.HasPrefix(s, "nsu=") {
		return "", "", false, nil
	}
	enc, rest, _ := strings.Cut(s[len("nsu="):], ";")
	uri, err = url.PathUnescape(enc)
	if err != nil {
		return "", "", true, fmt.Errorf("namespace uri %q: %w", enc, err)
	}
	return uri, rest, true, nil
}

// escapeNamespaceURI is uri as written in nsu=<uri>; (OPC 10000-6
// 5.3.1.11): '%' and ';' percent-encoded.
func escapeNamespaceURI(uri string) string {
	return strings.NewReplacer("%", "%25", ";", "%3B").Replace(uri)
}

// ByURI is node id (or node id prefix) s in the nsu=<uri>; form when it
// names its namespace by an index above 0 that ns holds (ns is a
// NamespaceArray); s otherwise.
func ByURI(s string, ns []string) string {
	idx, rest, ok := nsIndex(s)
	if !ok || idx == 0 || int(idx) >= len(ns) || ns[idx] == "" {
		return s
	}
	return "nsu=" + escapeNamespaceURI(ns[idx]) + ";" + rest
}

// ExpandedID is node n in the OPC UA string form that names its namespace
// by URI (nsu=<uri>;<id>) when its index is not 0 and ns holds it; the
// ns=<index> form otherwise. This is the form the driver reads correctly
// whatever the server's namespace order (browse -write-config writes it).
func ExpandedID(n *ua.NodeID, ns []string) string { return ByURI(n.String(), ns) }

// pinFile is the device's pin file below cfg.DataDir.
func (c *Client) pinFile() string {
	return filepath.Join(c.cfg.DataDir, "namespaces", url.PathEscape(c.id)+".json")
}

// loadPins reads the pin file; a missing file is no pins. An unreadable
// file (corrupt, truncated, a path that is no file) is reported by ok
// false: it is the only record of what the indexes meant, so nothing is
// pinned over it by a guess (the caller publishes the points bad until the
// file is fixed or deleted). Pins recorded with another endpoint are kept:
// an edited address (127.0.0.1 for localhost) names the same server more
// often than not, and the indexes keep the meaning they had; on another
// server a pinned URI it lacks makes its points bad (delete the file to
// pin again).
func (c *Client) loadPins() (p *nsPins, ok bool) {
	p = &nsPins{Endpoint: c.cfg.Endpoint, URIs: map[uint16]string{}}
	b, err := os.ReadFile(c.pinFile())
	if errors.Is(err, os.ErrNotExist) {
		return p, true
	}
	var got nsPins
	if err == nil {
		err = json.Unmarshal(b, &got)
	}
	if err != nil {
		c.log.Error("opc ua namespace pins unreadable: points with ns=<index> node ids are bad until the file is fixed or deleted (deleting it pins the indexes again to the server's order at the next session)",
			"file", c.pinFile(), "err", err, "status", statusHex(StatusNodeIDUnknown))
		return nil, false
	}
	if got.Endpoint != c.cfg.Endpoint {
		p.Endpoint = got.Endpoint // rewritten with this one at the session (namespaces)
		c.log.Warn("opc ua namespace pins were recorded with another endpoint; kept: ns=<index> node ids keep the URIs they were pinned to (delete the file to pin them again)",
			"file", c.pinFile(), "pinned_endpoint", got.Endpoint, "endpoint", c.cfg.Endpoint)
	}
	if got.URIs != nil {
		p.URIs = got.URIs
	}
	return p, true
}

// savePins writes the pins durably: a temporary file, synced, renamed over
// the old one, and the directory synced (a power cut leaves the old file
// or the new one, never an empty one).
func (c *Client) savePins(p *nsPins) error {
	path := c.pinFile()
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// namespaces fills t's namespace mapping for this session: it reads the
// server's NamespaceArray when a node id needs it (nsu=, or ns=<index>
// with index > 0), pins the indexes not pinned yet, and maps each pinned
// index to where its URI is now (t.moved) or marks it gone (t.gone).
func (c *Client) namespaces(ctx context.Context, cl *opcua.Client, t *nodeTable) error {
	used := map[uint16]bool{}
	uris := map[string]bool{}
	note := func(s string) {
		if idx, _, ok := nsIndex(s); ok && idx > 0 {
			used[idx] = true
		} else if uri, _, ok, err := nsURI(s); ok && err == nil {
			uris[uri] = true
		}
	}
	for i := range c.points {
		p := &c.points[i]
		note(p.NodeID)
		if p.Method != nil {
			note(p.Method.Object)
			note(p.Method.Method)
		}
	}
	if len(used) == 0 && len(uris) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	arr, err := cl.NamespaceArray(rctx)
	cancel()
	if err != nil {
		return fmt.Errorf("opcua: read namespace array: %w", err)
	}
	t.ns = arr
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	st := &c.ns
	for uri := range uris {
		on := slices.Contains(arr, uri)
		if was, seen := st.uriOn[uri]; (!seen && !on) || (seen && was != on) {
			if on {
				c.log.Info("opc ua namespace is on the server again", "uri", uri)
			} else {
				c.log.Warn("opc ua namespace of nsu= node ids is not on the server; their points are bad",
					"uri", uri, "namespace_array", nsText(arr), "status", statusHex(StatusNodeIDUnknown))
			}
		}
		if st.uriOn == nil {
			st.uriOn = map[string]bool{}
		}
		st.uriOn[uri] = on
	}
	if len(used) == 0 {
		return nil
	}
	if st.pins == nil {
		// read at the first session, and at every session start while the
		// file is unreadable (fixed or deleted meanwhile)
		var ok bool
		if st.pins, ok = c.loadPins(); !ok {
			for idx := range used {
				t.gone[idx] = ""
			}
			return nil
		}
		st.lastAt = map[uint16]int{}
	}
	idxs := make([]int, 0, len(used))
	for idx := range used {
		idxs = append(idxs, int(idx))
	}
	slices.Sort(idxs)
	for _, i := range idxs {
		idx := uint16(i)
		uri, pinned := st.pins.URIs[idx]
		if !pinned {
			if i >= len(arr) || arr[i] == "" {
				// nothing to pin: the server has no namespace there; its
				// nodes are unknown (and pinned when it has one)
				t.gone[idx] = ""
				if st.lastAt[idx] != -2 {
					st.lastAt[idx] = -2
					c.log.Warn("opc ua namespace index not on the server; its points are bad until it is",
						"ns", i, "namespace_array", nsText(arr), "status", statusHex(StatusNodeIDUnknown))
				}
				continue
			}
			uri = arr[i]
			st.pins.URIs[idx] = uri
			st.dirty = true
			st.lastAt[idx] = i
			c.log.Info("opc ua namespace index pinned to its URI", "ns", i, "uri", uri)
			continue
		}
		now := slices.Index(arr, uri)
		was, seen := st.lastAt[idx]
		if !seen {
			was = i // as pinned
		}
		st.lastAt[idx] = now
		switch {
		case now < 0:
			t.gone[idx] = uri
			if was != -1 {
				c.log.Warn("opc ua namespace of ns=<index> node ids is gone from the server; their points are bad, no node is read under the stale index",
					"ns", i, "uri", uri, "namespace_array", nsText(arr), "status", statusHex(StatusNodeIDUnknown))
			}
		case now != i:
			t.moved[idx] = uint16(now)
			if was != now {
				c.m.m.namespaceRemaps.WithLabelValues(c.id).Inc()
				c.log.Warn("opc ua server moved a namespace to another index; ns=<index> node ids are read at the new index (write nsu=<uri>; ids to avoid this)",
					"ns", i, "uri", uri, "now_ns", now)
			}
		case was != i:
			c.log.Info("opc ua namespace is back at its pinned index", "ns", i, "uri", uri)
		}
	}
	if st.dirty || st.pins.Endpoint != c.cfg.Endpoint {
		st.pins.Endpoint = c.cfg.Endpoint
		if err := c.savePins(st.pins); err != nil {
			// the pins hold for this process; a restarted gateway pins
			// again at its first session. Retried at every session start.
			if st.saveErr != err.Error() {
				st.saveErr = err.Error()
				c.log.Error("opc ua namespace pins not saved; retried at the next session", "file", c.pinFile(), "err", err)
			}
		} else {
			st.dirty, st.saveErr = false, ""
		}
	}
	return nil
}

// emitAbsent publishes the points whose namespace is not on the server
// this session bad StatusNodeIDUnknown, once at the session's start: the
// server answered (its NamespaceArray), the node is unknown to it. emit is
// the subscription's when the session has one (held while on probation,
// as its refused items are).
func (c *Client) emitAbsent(emit func(*sample.Cycle), t *nodeTable) {
	if len(t.absent) == 0 {
		return
	}
	ss := make([]sample.Sample, len(t.absent))
	for j, i := range t.absent {
		ss[j] = sample.Sample{Index: i, Quality: telemetry.QualityBad, Status: StatusNodeIDUnknown}
		c.m.bad(StatusNodeIDUnknown)
	}
	emit(&sample.Cycle{Samples: ss, Start: time.Now(), Interval: c.cfg.PublishInterval, Replied: true, Err: firstBad(ss)})
}
