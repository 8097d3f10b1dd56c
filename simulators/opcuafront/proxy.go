package opcuafront

import (
	"errors"
	"io"
	"net"
	"sync"
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

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(ln net.Listener, target string) *proxy {
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p
}

func (p *proxy) serve() {
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
		go p.handle(c)
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

func (p *proxy) handle(c net.Conn) {
	defer p.wg.Done()
	if !p.track(c, true) {
		_ = c.Close()
		return
	}
	defer p.track(c, false)
	defer c.Close()
	d, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(d, true) {
		_ = d.Close()
		return
	}
	defer p.track(d, false)
	defer d.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(d, c)
		_ = d.Close()
		close(done)
	}()
	_, _ = io.Copy(c, d)
	_ = c.Close()
	<-done
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
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
