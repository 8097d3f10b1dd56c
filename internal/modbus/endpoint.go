package modbus

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
)

// A connection is shared by the devices whose addresses name the same
// endpoint (review mbconv F2): a converter named 127.0.0.1:502 by one
// device and localhost:502 by another is one TCP peer, and its late
// answers reach whichever of two connections is open; the protection of
// replies (one request in flight, doubt after a timeout or an exception,
// owed answers, proofs) holds per connection only. So devices are grouped
// by endpoint, not by the address string: a TCP address by its host's IP
// addresses and its port, a serial device by its path with symbolic links
// resolved (/dev/serial/by-id/... and /dev/ttyUSB0).

// lookupFunc resolves a host name to its IP addresses (nil when it does
// not resolve).
type lookupFunc func(ctx context.Context, host string) []netip.Addr

// lookupHost resolves host with the system's resolver.
func lookupHost(ctx context.Context, host string) []netip.Addr {
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	return addrs
}

// cachedLookup is lookupHost resolving each host once.
func cachedLookup() lookupFunc {
	seen := map[string][]netip.Addr{}
	return func(ctx context.Context, host string) []netip.Addr {
		if a, ok := seen[host]; ok {
			return a
		}
		a := lookupHost(ctx, host)
		seen[host] = a
		return a
	}
}

// endpointKeys returns the keys of the endpoint cfg's address names, each
// "transport|endpoint": the address as configured (linkKey), and for a TCP
// address each "ip:port" its host resolves to (an IP literal in its
// canonical form, a named port by number), for a serial device its path
// with symbolic links resolved. A host that does not resolve within ctx,
// or a path that does not exist, gives the configured key alone. Two
// devices share a connection when their keys meet.
func endpointKeys(ctx context.Context, look lookupFunc, cfg Config) []string {
	own := cfg.linkKey()
	keys := []string{own}
	pre := string(cfg.Transport) + "|"
	if cfg.Transport.Serial() {
		if p, err := filepath.EvalSymlinks(cfg.Address); err == nil {
			if p, err = filepath.Abs(p); err == nil && pre+p != own {
				keys = append(keys, pre+p)
			}
		}
		return keys
	}
	host, port, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return keys
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		n, lerr := net.DefaultResolver.LookupPort(ctx, "tcp", port)
		if lerr != nil {
			return keys
		}
		pn = uint64(n)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs = look(ctx, host)
	}
	for _, a := range addrs {
		k := pre + netip.AddrPortFrom(a.Unmap(), uint16(pn)).String()
		if k != own {
			keys = append(keys, k)
		}
	}
	return keys
}

// connections maps endpoint keys (endpointKeys) to the key of the
// connection that reaches them: the linkKey of the first device joined
// there (as configured: the connection's label in metrics and logs).
type connections map[string]string

// join returns the connection key of a device whose address is own
// (linkKey) and names endpoints keys: that of the first device joined
// whose keys meet these, else own; every key then leads to it.
func (c connections) join(own string, keys []string) string {
	conn := own
	for _, k := range keys {
		if x, ok := c[k]; ok {
			conn = x
			break
		}
	}
	for _, k := range keys {
		if _, ok := c[k]; !ok {
			c[k] = conn
		}
	}
	return conn
}
