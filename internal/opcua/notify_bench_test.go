package opcua

import (
	"context"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/sample"
)

// publishMessage is a NotificationMessage of n data changes: point i has
// value base+i, status Good (Uncertain for every 7th) and source time ts+i ms.
func publishMessage(n int, base float64, ts time.Time) *ua.NotificationMessage {
	items := make([]*ua.MonitoredItemNotification, n)
	for i := range items {
		st := ua.StatusOK
		if i%7 == 0 {
			st = ua.StatusUncertain
		}
		items[i] = &ua.MonitoredItemNotification{ClientHandle: uint32(i), Value: &ua.DataValue{
			EncodingMask: ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
			Value:        ua.MustVariant(base + float64(i)), Status: st,
			SourceTimestamp: ts.Add(time.Duration(i) * time.Millisecond), ServerTimestamp: ts,
		}}
	}
	return &ua.NotificationMessage{SequenceNumber: 1, NotificationData: []*ua.ExtensionObject{
		ua.NewExtensionObject(&ua.DataChangeNotification{MonitoredItems: items}),
	}}
}

// BenchmarkNotifications turns one 1,000-item publish response (one
// value in seven Uncertain) into a cycle, as the publish loop does: the
// per-publish cost of the cycle and sample structures (issue 17).
func BenchmarkNotifications(b *testing.B) {
	const n = 1000
	pts := make([]Point, n)
	for i := range pts {
		pts[i].NodeID = "ns=2;i=1"
	}
	c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840"}, pts, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	r := newRunState(c, func(cyc *sample.Cycle) { got += len(cyc.Samples) })
	s := &subSession{c: c, r: r, sub: &subscription{SubscriptionTiming: SubscriptionTiming{PublishingInterval: 100 * time.Millisecond}}}
	msg := publishMessage(n, 0, time.UnixMilli(1763812345101))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.notifications(context.Background(), msg, false); err != nil {
			b.Fatal(err)
		}
	}
	if got == 0 {
		b.Fatal("no samples")
	}
}
