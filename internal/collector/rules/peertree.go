package rules

// ostree is an order-statistic treap of peer-group members: insert,
// delete, rank and select in O(log n) expected, in-order walks from either
// end. Members are ordered by less, which must be a strict total order
// (ties broken by the member's uid).
type ostree struct {
	root *onode
	less func(a, b *peerMember) bool
}

type onode struct {
	l, r *onode
	m    *peerMember
	pri  uint64
	size int
}

func osize(n *onode) int {
	if n == nil {
		return 0
	}
	return n.size
}

func (n *onode) fix() { n.size = 1 + osize(n.l) + osize(n.r) }

// split cuts t into the nodes ordered before m and the rest.
func (t *ostree) split(n *onode, m *peerMember) (*onode, *onode) {
	if n == nil {
		return nil, nil
	}
	if t.less(n.m, m) {
		l, r := t.split(n.r, m)
		n.r = l
		n.fix()
		return n, r
	}
	l, r := t.split(n.l, m)
	n.l = r
	n.fix()
	return l, n
}

func merge(a, b *onode) *onode {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.pri > b.pri:
		a.r = merge(a.r, b)
		a.fix()
		return a
	default:
		b.l = merge(a, b.l)
		b.fix()
		return b
	}
}

// insert adds n (n.m set, not in the tree).
func (t *ostree) insert(n *onode) {
	n.l, n.r, n.size = nil, nil, 1
	l, r := t.split(t.root, n.m)
	t.root = merge(merge(l, n), r)
}

// remove takes out the node of m; m's key must not have changed since it
// was inserted.
func (t *ostree) remove(m *peerMember) {
	t.root = t.del(t.root, m)
}

func (t *ostree) del(n *onode, m *peerMember) *onode {
	if n == nil {
		return nil
	}
	switch {
	case n.m == m:
		return merge(n.l, n.r)
	case t.less(m, n.m):
		n.l = t.del(n.l, m)
	default:
		n.r = t.del(n.r, m)
	}
	n.fix()
	return n
}

// rank is the number of members ordered before m.
func (t *ostree) rank(m *peerMember) int {
	k := 0
	for n := t.root; n != nil; {
		if t.less(n.m, m) {
			k += osize(n.l) + 1
			n = n.r
		} else {
			n = n.l
		}
	}
	return k
}

// at returns the member of rank k (0-based; k < t.len()).
func (t *ostree) at(k int) *peerMember {
	n := t.root
	for n != nil {
		ls := osize(n.l)
		switch {
		case k < ls:
			n = n.l
		case k == ls:
			return n.m
		default:
			k -= ls + 1
			n = n.r
		}
	}
	return nil
}

func (t *ostree) len() int { return osize(t.root) }

// ascend calls f on members from the first in order until f returns false.
func (t *ostree) ascend(f func(*peerMember) bool) { walk(t.root, false, f) }

// descend calls f on members from the last in order until f returns false.
func (t *ostree) descend(f func(*peerMember) bool) { walk(t.root, true, f) }

func walk(n *onode, rev bool, f func(*peerMember) bool) bool {
	if n == nil {
		return true
	}
	first, second := n.l, n.r
	if rev {
		first, second = n.r, n.l
	}
	return walk(first, rev, f) && f(n.m) && walk(second, rev, f)
}

// mix is the splitmix64 finaliser: treap priorities from member uids.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
