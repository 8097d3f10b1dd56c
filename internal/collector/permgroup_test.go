package collector

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// bbtest F3: a collector of another group connecting as the shipped
// accounts' collector user (whose permissions name the group
// smelter-collector's buckets and fences) first added its fence subjects
// to the shared stream, then stopped on the refused fence probe. Now it
// stops at its first request the server refuses (its members bucket),
// naming the subject, within one start attempt (not a retry for
// StartTimeout ending "context deadline exceeded"), and leaves the stream
// as it was.
func TestOtherGroupRefusedBeforeTouchingStream(t *testing.T) {
	url, pki, pw := permServer(t)
	cfg := collectorUser(t, url, pki)
	startCfg(t, cfg) // the group the accounts are written for: the stream exists
	cl := connect(t, url, pki, "collector", pw["COLLECTOR"])
	subjects := func() []string {
		s, err := cl.js.Stream(t.Context(), "SMELTER")
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.Subjects
	}
	before := subjects()
	other := cfg
	other.Group, other.DataDir = "other-grp", t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), StartTimeout/2)
	defer cancel()
	err := newCollector(t, other).Run(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `Publish to "$JS.API.STREAM.INFO.KV_other-grp_members"`) ||
		!strings.Contains(err.Error(), `lists for group "other-grp"`) {
		t.Fatalf("Run of group other-grp as the collector user: %v, want the refused request named before StartTimeout", err)
	}
	if after := subjects(); !slices.Equal(after, before) {
		t.Fatalf("the refused collector changed the stream's subjects %v to %v", before, after)
	}
}
