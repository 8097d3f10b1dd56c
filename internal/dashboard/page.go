package dashboard

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
)

// Paging of the list endpoints that grow with the fleet (/assets, /alerts,
// /kpis, /gateways; docs/api.md, "Paging"): one scheme for all of them.
// A request gives `limit` (1..MaxPageSize, default DefaultPageSize) and,
// for the pages after the first, `cursor`: the `next` of the previous
// answer, unchanged. An answer carries `total` (the items matching the
// filters, over all pages) and `next` only when more items follow.
//
// The cursor is keyset, not an offset: it holds the sort key of the last
// item served, and the next page starts after that key. A list that
// changes between two pages (gateways evicted at MaxGateways, assets
// added, alerts cleared) therefore never repeats or skips an item that
// stayed where it was; an item whose key moved (an alert cleared between
// two pages moves from the active to the cleared part) may be seen twice or
// not at all, as with any paging over live data.
const (
	DefaultPageSize = 500
	MaxPageSize     = 5000
)

// maxCursor bounds the cursor parameter: a key is at most a few 64-byte
// tokens and an alert id (the 4-token key, a rule and a time).
const maxCursor = 1024

const notACursor = "not a cursor of this endpoint (pass the next of the previous answer unchanged)"

// pageKey is an endpoint's sort key as its cursor carries it; check
// rejects a key no item of the endpoint can have (a forged cursor).
type pageKey interface {
	check() error
}

// page reads limit and cursor; cursor, which must be one of endpoint ep's
// (the endpoint's name, as encodeCursor got it), decodes into after (a
// pointer to the endpoint's key type), and ok reports whether one was
// given.
func (q *query) page(ep string, after pageKey) (limit int, ok bool) {
	limit = q.intRange("limit", DefaultPageSize, 1, MaxPageSize)
	c := q.v.Get("cursor")
	if c == "" {
		return limit, false
	}
	if err := decodeCursor(c, ep, after); err != nil {
		q.fail("cursor", notACursor)
		return limit, false
	}
	return limit, true
}

// cursorJSON is a cursor's content: the endpoint it belongs to and the
// sort key of the last item served. The endpoint keeps a cursor of
// /assets from being taken by /kpis, whose keys have the same shape
// (review2 F3).
type cursorJSON struct {
	E string          `json:"e"`
	K json.RawMessage `json:"k"`
}

// encodeCursor is base64url (no padding) of {"e": ep, "k": key} as JSON.
func encodeCursor(ep string, key any) string {
	k, _ := json.Marshal(key) // keys are structs of strings and numbers
	data, _ := json.Marshal(cursorJSON{E: ep, K: k})
	return base64.RawURLEncoding.EncodeToString(data)
}

func decodeCursor(s, ep string, into pageKey) error {
	if len(s) > maxCursor {
		return fmt.Errorf("%d bytes, more than %d", len(s), maxCursor)
	}
	data, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	var c cursorJSON
	if err := strictJSON(data, &c); err != nil {
		return err
	}
	if c.E != ep {
		return fmt.Errorf("a cursor of %q, not %q", c.E, ep)
	}
	if err := strictJSON(c.K, into); err != nil {
		return err
	}
	return into.check()
}

// strictJSON decodes one JSON value of data into v, refusing unknown
// fields and anything after the value.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the key")
	}
	return nil
}

// pageOf returns the page of list (sorted by cmp over keyOf) that follows
// after (nil: the first page), at most limit items, and the cursor of the
// next page ("" when none follows).
func pageOf[T, K any](ep string, list []T, keyOf func(*T) K, cmp func(a, b K) int, after *K, limit int) ([]T, string) {
	start := 0
	if after != nil {
		i, found := slices.BinarySearchFunc(list, *after, func(t T, k K) int { return cmp(keyOf(&t), k) })
		if found {
			i++
		}
		start = i
	}
	end := min(len(list), start+limit)
	next := ""
	if end < len(list) {
		next = encodeCursor(ep, keyOf(&list[end-1]))
	}
	return list[start:end], next
}
