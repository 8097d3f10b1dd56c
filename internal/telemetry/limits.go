package telemetry

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Bounds on the strings of a message that a consumer keeps per asset or
// per signal (docs/schema.md, "Bounds"). The collector holds every asset's
// signals, units, labels and path for as long as it tracks the asset, so a
// string without a bound is memory a publisher controls: these bound each
// one, and the gateway's configuration check (internal/gwconfig) holds
// what a gateway publishes to the same bounds, so real data never breaks
// them. Identifiers (signal names, units, labels, path elements, nameplate
// keys) that break their bound make the reading, or the birth or message,
// invalid; free text (a reading's text, a src) is cut to its bound.
//
//	field                                  bound
//	gateway, asset.id, asset.class         token: 1-64 bytes of [A-Za-z0-9_-] (ValidToken)
//	asset.path                             at most MaxPathElems elements, each 0-64 bytes of [A-Za-z0-9_-] (ValidPathElem)
//	readings[].signal, signals[].signal    1-MaxSignalLen bytes of [A-Za-z0-9_-] (ValidSignal)
//	readings[].unit, signals[].unit        0-MaxUnitLen bytes of printable ASCII, no space (ValidUnit)
//	signals[].enum[], write.allowed[]      at most MaxLabels labels of 1-MaxLabelLen bytes of UTF-8, no control character (ValidLabel)
//	all labels of one birth                at most MaxBirthLabels labels and MaxBirthLabelBytes bytes in total
//	nameplate keys                         token, at most MaxNameplate keys
//	readings[].text                        cut to MaxTextLen bytes (CutText)
//	readings[].src, signals[].src, protocol cut to MaxSrcLen bytes (CutText)
//	death reason                           cut to MaxSrcLen bytes (CutText)
const (
	// MaxSignalLen is the longest signal name: catalog names are at most
	// 24 bytes; 64 is the bound of a subject token and of a command's
	// signal (internal/command), so every signal can be commanded.
	MaxSignalLen = 64
	// MaxUnitLen is the longest unit: UCUM codes the gateway publishes
	// are at most 10 bytes ("[in_i'H2O]").
	MaxUnitLen = 32
	// MaxLabelLen is the longest state label (enum, allowed values).
	MaxLabelLen = 64
	// MaxLabels is the most labels one birth signal lists in each of enum
	// and write.allowed: device state lists are short (the catalog's
	// longest has 8 states; a vendor's status word rarely tens).
	MaxLabels = 64
	// MaxBirthLabels and MaxBirthLabelBytes bound the labels (enum and
	// write.allowed of every signal, counted together) of one birth,
	// after a split birth's parts are merged: the collector holds them per
	// asset, in memory and in its checkpoint record, so without a total a
	// birth of 1024 signals x 2 x MaxLabels labels of MaxLabelLen bytes
	// would be 8 MiB an asset, over the 1 MiB max_payload of its record.
	// 2,048 labels (a 256-signal device with 8 states on every signal)
	// and 32 KiB keep the worst-case record well under it
	// (TestRecordSizeAtSignalBound).
	MaxBirthLabels     = 2048
	MaxBirthLabelBytes = 32 << 10
	// MaxPathElems is the most elements of asset.path (ISA-95 uses 5).
	MaxPathElems = 8
	// MaxNameplate is the most nameplate ratings one birth carries.
	MaxNameplate = 64
	// MaxTextLen is the longest text a consumer keeps of a reading (a
	// string point's value); a longer text is cut to it.
	MaxTextLen = 1024
	// MaxSrcLen is the longest src (and birth protocol) a consumer keeps;
	// a longer one is cut to it.
	MaxSrcLen = 256
)

// ValidSignal reports whether s can be a signal name: 1-MaxSignalLen
// bytes of [A-Za-z0-9_-], the characters of a subject token. Every
// catalog name is one (snake_case).
func ValidSignal(s string) bool { return len(s) <= MaxSignalLen && tokenChars(s) }

// ValidPathElem reports whether s can be an element of asset.path: 0-64
// bytes of [A-Za-z0-9_-] (empty is allowed: "_" is the usual placeholder).
func ValidPathElem(s string) bool { return s == "" || ValidToken(s) }

// ValidUnit reports whether s can be a unit: 0-MaxUnitLen bytes of
// printable ASCII other than space (the characters of UCUM codes).
func ValidUnit(s string) bool {
	if len(s) > MaxUnitLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// ValidLabel reports whether s can be a state label: 1-MaxLabelLen bytes
// of UTF-8 without control characters.
func ValidLabel(s string) bool {
	if len(s) == 0 || len(s) > MaxLabelLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// CutText returns s cut to at most n bytes, at a UTF-8 character
// boundary when s is valid UTF-8 there; s itself when it is short enough.
// A cut string is a copy, so it does not keep the long one alive.
func CutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && i > n-utf8.UTFMax && !utf8.RuneStart(s[i]) {
		i--
	}
	if !utf8.RuneStart(s[i]) {
		i = n // not UTF-8 there: cut at n bytes
	}
	return strings.Clone(s[:i])
}

// tokenChars reports whether s is non-empty and only [A-Za-z0-9_-].
func tokenChars(s string) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckPath reports why path cannot be an asset.path (at most
// MaxPathElems elements, each ValidPathElem), or nil.
func CheckPath(path []string) error {
	if len(path) > MaxPathElems {
		return fmt.Errorf("%w: asset.path has %d elements, more than %d", ErrInvalid, len(path), MaxPathElems)
	}
	for i, e := range path {
		if !ValidPathElem(e) {
			return fmt.Errorf("%w: asset.path[%d] %q is not 0-64 letters, digits, '_' or '-'", ErrInvalid, i, CutText(e, 64))
		}
	}
	return nil
}
