package opcuafront

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is the public listener. gopcua's server cannot close its client
// connections (Close only sends CloseSecureChannel and leaves the sockets
// open), so the Front listens itself and pipes each connection to the
// gopcua listener on an internal port: Stop closes both sides at once and
// clients see the outage immediately, and DropConnections cuts every
// connection while the server (and its sessions) stays up.
type proxy struct {
	ln     net.Listener
	target string
	gate   *atomic.Pointer[gate] // the Front's: silence and delay, kept across restarts
	settle *settle               // told of every connection made to target
	quit   chan struct{}         // closed by close

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// gate holds traffic: while hold is open (not closed) nothing is forwarded
// in either direction (a silent server); delay holds each chunk the server
// sends (a slow server). Immutable once stored.
type gate struct {
	hold  chan struct{} // nil: not silent; closed when the silence ends
	delay time.Duration
}

// newProxy starts serving ln; ctx bounds the dials to target (the Front's
// instance context, cancelled when the instance stops).
func newProxy(ctx context.Context, ln net.Listener, target string, g *atomic.Pointer[gate], st *settle) *proxy {
	p := &proxy{ln: ln, target: target, gate: g, settle: st, quit: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve(ctx)
	return p
}

func (p *proxy) serve(ctx context.Context) {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.wg.Add(1)
		go p.handle(ctx, c)
	}
}

func (p *proxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		if p.conns == nil {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *proxy) handle(ctx context.Context, c net.Conn) {
	defer p.wg.Done()
	if !p.track(c, true) {
		_ = c.Close()
		return
	}
	defer p.track(c, false)
	defer c.Close()
	dialer := net.Dialer{Timeout: 5 * time.Second}
	d, err := dialer.DialContext(ctx, "tcp", p.target)
	if err != nil {
		return
	}
	p.settle.dial()
	if !p.track(d, true) {
		_ = d.Close()
		return
	}
	defer p.track(d, false)
	defer d.Close()
	done := make(chan struct{})
	go func() {
		p.pipe(d, c, false)
		_ = d.Close()
		close(done)
	}()
	p.pipe(c, d, true)
	_ = c.Close()
	<-done
}

// pipe copies src to dst through the gate until either side fails.
func (p *proxy) pipe(dst, src net.Conn, toClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.pass(toClient) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// pass waits until the gate lets a chunk through; false once the proxy closes.
func (p *proxy) pass(toClient bool) bool {
	for {
		g := p.gate.Load()
		if g == nil {
			return true
		}
		if g.hold != nil {
			select {
			case <-g.hold:
				continue // silence over: look at the gate again
			case <-p.quit:
				return false
			}
		}
		if toClient && g.delay > 0 {
			t := time.NewTimer(g.delay)
			select {
			case <-t.C:
			case <-p.quit:
				t.Stop()
				return false
			}
		}
		return true
	}
}

// drop closes every piped connection.
func (p *proxy) drop() {
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// close stops accepting, closes every connection and waits for the pipes.
func (p *proxy) close() {
	close(p.quit)
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
