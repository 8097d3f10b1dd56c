package mqtt

import (
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyStore is paho's memory store, except that it keeps its own copy of a
// PUBLISH packet and hands out copies. paho v1.5.1 resumes a session (on
// every connect, CleanSession false) by reading stored packets and setting
// their DUP flag while the connection's writer may be encoding the very same
// packet objects: data races that go test -race reports. With copies the
// writer and the store never share a packet (the payload bytes, only ever
// read, are shared).
type copyStore struct{ paho.Store }

func newCopyStore() *copyStore { return &copyStore{paho.NewMemoryStore()} }

func (s *copyStore) Put(key string, p packets.ControlPacket) {
	if pp, ok := p.(*packets.PublishPacket); ok {
		cp := *pp
		p = &cp
	}
	s.Store.Put(key, p)
}

func (s *copyStore) Get(key string) packets.ControlPacket {
	p := s.Store.Get(key)
	if pp, ok := p.(*packets.PublishPacket); ok {
		cp := *pp
		return &cp
	}
	return p
}
