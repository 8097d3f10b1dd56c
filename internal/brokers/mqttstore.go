package brokers

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// memStore is broker state that outlives one mochi server instance:
// persistent sessions, their subscriptions and undelivered QoS 1/2 messages,
// and retained messages. It plays the part of mochi's disk storage hooks
// (which need modules we do not carry) for tests and the demo.
type memStore struct {
	mu       sync.Mutex
	clients  map[string]storage.Client
	subs     map[string]storage.Subscription
	retained map[string]storage.Message
	inflight map[string]storage.Message
}

func newMemStore() *memStore {
	return &memStore{
		clients:  map[string]storage.Client{},
		subs:     map[string]storage.Subscription{},
		retained: map[string]storage.Message{},
		inflight: map[string]storage.Message{},
	}
}

// storeHook writes mochi's events into a memStore and reads it back when a
// server starts.
type storeHook struct {
	mqtt.HookBase
	st *memStore
}

func (h *storeHook) ID() string { return "memory-store" }

func (h *storeHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete,
		mqtt.OnQosDropped, mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.StoredClients, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages,
		mqtt.StoredSubscriptions,
	}, []byte{b})
}

func (h *storeHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.updateClient(cl) }
func (h *storeHook) OnWillSent(cl *mqtt.Client, _ packets.Packet)           { h.updateClient(cl) }

func (h *storeHook) updateClient(cl *mqtt.Client) {
	props := cl.Properties.Props.Copy(false)
	c := storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        bytes.Clone(cl.Properties.Username),
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: props.SessionExpiryInterval,
			AuthenticationMethod:  props.AuthenticationMethod,
			AuthenticationData:    props.AuthenticationData,
			RequestProblemInfo:    props.RequestProblemInfo,
			RequestResponseInfo:   props.RequestResponseInfo,
			ReceiveMaximum:        props.ReceiveMaximum,
			TopicAliasMaximum:     props.TopicAliasMaximum,
			User:                  props.User,
			MaximumPacketSize:     props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	}
	h.st.mu.Lock()
	h.st.clients[cl.ID] = c
	h.st.mu.Unlock()
}

func (h *storeHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	h.deleteClient(cl.ID)
}

func (h *storeHook) OnClientExpired(cl *mqtt.Client) { h.deleteClient(cl.ID) }

func (h *storeHook) deleteClient(id string) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	delete(h.st.clients, id)
}

func subKey(client, filter string) string { return client + "\x00" + filter }

func (h *storeHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 {
			continue // refused subscription
		}
		h.st.subs[subKey(cl.ID, f.Filter)] = storage.Subscription{
			ID: subKey(cl.ID, f.Filter), T: storage.SubscriptionKey, Client: cl.ID,
			Qos: codes[i], Filter: f.Filter, Identifier: f.Identifier, NoLocal: f.NoLocal,
			RetainHandling: f.RetainHandling, RetainAsPublished: f.RetainAsPublished,
		}
	}
}

func (h *storeHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	for _, f := range pk.Filters {
		delete(h.st.subs, subKey(cl.ID, f.Filter))
	}
}

func message(t string, id string, cl *mqtt.Client, pk packets.Packet, sent int64) storage.Message {
	props := pk.Properties.Copy(false)
	return storage.Message{
		ID: id, T: t, Client: cl.ID, Origin: pk.Origin, FixedHeader: pk.FixedHeader,
		TopicName: pk.TopicName, Payload: bytes.Clone(pk.Payload), Sent: sent, Created: pk.Created,
		PacketID: pk.PacketID,
		Properties: storage.MessageProperties{
			PayloadFormat:          props.PayloadFormat,
			MessageExpiryInterval:  props.MessageExpiryInterval,
			ContentType:            props.ContentType,
			ResponseTopic:          props.ResponseTopic,
			CorrelationData:        props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier,
			TopicAlias:             props.TopicAlias,
			User:                   props.User,
		},
	}
}

func (h *storeHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	if r == -1 {
		delete(h.st.retained, pk.TopicName)
		return
	}
	h.st.retained[pk.TopicName] = message(storage.RetainedKey, pk.TopicName, cl, pk, 0)
}

func (h *storeHook) OnRetainedExpired(topic string) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	delete(h.st.retained, topic)
}

func inflightKey(cl *mqtt.Client, pk packets.Packet) string {
	return cl.ID + "\x00" + strconv.Itoa(int(pk.PacketID))
}

func (h *storeHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	k := inflightKey(cl, pk)
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	h.st.inflight[k] = message(storage.InflightKey, k, cl, pk, sent)
}

func (h *storeHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	delete(h.st.inflight, inflightKey(cl, pk))
}

func (h *storeHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { h.OnQosComplete(cl, pk) }

func (h *storeHook) StoredClients() ([]storage.Client, error) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	return valuesOf(h.st.clients), nil
}

func (h *storeHook) StoredSubscriptions() ([]storage.Subscription, error) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	return valuesOf(h.st.subs), nil
}

func (h *storeHook) StoredRetainedMessages() ([]storage.Message, error) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	return valuesOf(h.st.retained), nil
}

func (h *storeHook) StoredInflightMessages() ([]storage.Message, error) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	v := valuesOf(h.st.inflight)
	// Resend in the order the broker accepted them.
	slices.SortFunc(v, func(a, b storage.Message) int {
		if a.Created != b.Created {
			if a.Created < b.Created {
				return -1
			}
			return 1
		}
		return int(a.PacketID) - int(b.PacketID)
	})
	return v, nil
}

func valuesOf[T any](m map[string]T) []T {
	v := make([]T, 0, len(m))
	for _, x := range m {
		v = append(v, x)
	}
	return v
}
