package opcuafront

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/wait"
)

func (s *settle) counts() (dialed, settled, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dialed, s.settled, s.open
}

// TestStopWaitsForGopcuaChannels checks the accounting Stop relies on to
// close gopcua's server only after gopcua has registered (WaitGroup.Add)
// every connection it accepted: the counts follow real connections through
// gopcua's own log lines, so a gopcua version that renames them fails here.
func TestStopWaitsForGopcuaChannels(t *testing.T) {
	src := &fixed{class: "motor", signals: []string{"power"}, values: []float64{1}}
	f := startFront(t, Config{}, []Asset{{ID: "m-1", Source: src}})
	st := f.inst.settle
	ctx := t.Context()
	c1 := connect(t, ctx, f.Endpoint())
	connect(t, ctx, f.Endpoint())
	wait.For(t, 10*time.Second, "two channels open and every connection settled", func() bool {
		d, s, o := st.counts()
		return d >= 2 && s == d && o == 2
	})
	// A connection that sends no HEL and closes: gopcua refuses it. (Closing
	// the server adds one more "socket closed": settled may exceed dialed.)
	raw, err := net.Dial("tcp", f.Endpoint()[len("opc.tcp://"):])
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the raw connection dialed through", func() bool {
		d, _, _ := st.counts()
		return d >= 3
	})
	_ = raw.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = c1.Close(cctx)
	wait.For(t, 10*time.Second, "one channel open, the refused connection settled", func() bool {
		d, s, o := st.counts()
		return s == d && o == 1
	})
	if err := f.Stop(); err != nil {
		t.Logf("stop: %v", err)
	}
	if d, s, o := st.counts(); s < d || o != 0 {
		t.Fatalf("after Stop: dialed %d settled %d open %d: Stop closed gopcua with connections unsettled", d, s, o)
	}
}

// TestStopDuringConnectionChurn stops and restarts the front while clients
// keep connecting: under -race this is where gopcua's RegisterConn Add met
// Close's Wait (the demo's CI run, session 6).
func TestStopDuringConnectionChurn(t *testing.T) {
	src := &fixed{class: "motor", signals: []string{"power"}, values: []float64{1}}
	f := startFront(t, Config{}, []Asset{{ID: "m-1", Source: src}})
	endpoint := f.Endpoint()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				// The connect's own deadline is long and not ctx's: gopcua
				// v0.9.0 races (uasc readChunk reads openingInstance while
				// a returning open clears it: a data race under -race)
				// when an open gives up before its OpenSecureChannel
				// response arrives (upstream; CI on a loaded machine,
				// session 9). A restart closes the connection instead.
				c, err := opcua.NewClient(endpoint, opcua.SecurityMode(ua.MessageSecurityModeNone),
					opcua.AutoReconnect(false), opcua.DialTimeout(time.Second), opcua.RequestTimeout(10*time.Second))
				if err != nil {
					continue
				}
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				if c.Connect(cctx) == nil {
					_ = c.Close(cctx)
				}
				ccancel()
			}
		})
	}
	for range 5 {
		st := f.inst.settle
		wait.For(t, 10*time.Second, "clients to reach the front", func() bool {
			d, _, _ := st.counts()
			return d >= 3
		})
		if err := f.Restart(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
}
