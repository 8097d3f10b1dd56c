package mqtt

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/sparkplug/tahutest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// tahuMessage is one line of deploy/sparkplug-interop/decode.js: a message
// as Eclipse Tahu's sparkplug-payload decoded it.
type tahuMessage struct {
	Ready   bool   `json:"ready"`
	Topic   string `json:"topic"`
	QoS     int    `json:"qos"`
	Retain  bool   `json:"retain"`
	Typed   int    `json:"typedFromBirth"`
	Payload struct {
		Error     string       `json:"error"`
		Timestamp any          `json:"timestamp"`
		Seq       any          `json:"seq"`
		Metrics   []tahuMetric `json:"metrics"`
	} `json:"payload"`
}

type tahuMetric struct {
	Name       string                     `json:"name"`
	Alias      any                        `json:"alias"`
	Type       string                     `json:"type"`
	Value      any                        `json:"value"`
	Timestamp  any                        `json:"timestamp"`
	Properties map[string]tahuPropertyVal `json:"properties"`
}

type tahuPropertyVal struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

func num(v any) int64 {
	switch x := v.(type) {
	case float64:
		return int64(x)
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return -1
}

// TestInteropSparkplugTahuDecodes: Eclipse Tahu's JavaScript decoder
// (sparkplug-payload from npm, an implementation nobody here wrote) reads
// what the gateway publishes with encoding sparkplug_b on the machine's
// Mosquitto: births with bdSeq, the rebirth metric, datatypes, aliases and
// engineering units, data by alias, quality and seq.
func TestInteropSparkplugTahuDecodes(t *testing.T) {
	tahutest.Need(t)
	group := fmt.Sprintf("smelter-interop-%d", os.Getpid())
	dec := tahutest.Start(t, "decode.js", "--url", "mqtt://127.0.0.1:1883", "--group", group)
	var first tahuMessage
	if err := json.Unmarshal([]byte(dec.Next(t, 30*time.Second)), &first); err != nil || !first.Ready {
		t.Fatalf("decoder not ready: %v %+v (stderr %s)", err, first, dec.Stderr())
	}
	cfg := Config{URL: "tcp://127.0.0.1:1883", Encoding: EncodingSparkplug, ClientID: group + "-gw"}
	cfg.Sparkplug.GroupID = group
	r := runUplink(t, cfg, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	good := telemetry.Reading{Signal: "discharge_pressure", Value: 0.71, Unit: "MPa", TS: 1700000000100}
	bad := telemetry.Reading{Signal: "load_state", Quality: telemetry.QualityBad, TS: 1700000000100, Status: 2}
	publishOK(t, r.u, birthEnv(t, ac1, 1), batchEnv(ac1, 2, good, bad))

	byType := map[string]tahuMessage{}
	var seqs []int64
	for len(byType) < 3 {
		var m tahuMessage
		l := dec.Next(t, 30*time.Second)
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("decoder line %q: %v", l, err)
		}
		if m.Payload.Error != "" {
			t.Fatalf("Tahu could not decode %s: %s", m.Topic, m.Payload.Error)
		}
		typ := ""
		for _, k := range []string{"NBIRTH", "DBIRTH", "DDATA"} {
			if m.Topic == "spBv1.0/"+group+"/"+k+"/gw-test" || m.Topic == "spBv1.0/"+group+"/"+k+"/gw-test/ac-1" {
				typ = k
			}
		}
		if typ == "" {
			continue
		}
		byType[typ] = m
		seqs = append(seqs, num(m.Payload.Seq))
	}
	t.Run("tck-id-payloads-sequence-num-incrementing", func(t *testing.T) {
		if len(seqs) != 3 || seqs[0] != 0 || seqs[1] != 1 || seqs[2] != 2 {
			t.Fatalf("seqs %v", seqs)
		}
	})
	t.Run("tck-id-payloads-nbirth-bdseq", func(t *testing.T) {
		nb := byType["NBIRTH"]
		var bd, rebirth bool
		for _, m := range nb.Payload.Metrics {
			bd = bd || m.Name == "bdSeq" && m.Type == "Int64" && num(m.Value) == 0
			rebirth = rebirth || m.Name == "Node Control/Rebirth" && m.Type == "Boolean" && m.Value == false
		}
		if !bd || !rebirth || nb.QoS != 0 || nb.Retain {
			t.Fatalf("NBIRTH as Tahu reads it: %+v", nb)
		}
	})
	var alias int64 = -1
	t.Run("tck-id-topics-dbirth-metrics", func(t *testing.T) {
		for _, m := range byType["DBIRTH"].Payload.Metrics {
			if m.Name == "discharge_pressure" && m.Type == "Double" && m.Properties["engUnit"].Value == "MPa" &&
				m.Properties["engHigh"].Type == "Double" && m.Properties["engHigh"].Value == 1.6 {
				alias = num(m.Alias)
			}
		}
		if alias <= 0 {
			t.Fatalf("DBIRTH as Tahu reads it: %+v", byType["DBIRTH"].Payload.Metrics)
		}
	})
	t.Run("tck-id-payloads-alias-data-cmd-requirement", func(t *testing.T) {
		dd := byType["DDATA"]
		ms := dd.Payload.Metrics
		if len(ms) != 2 || dd.Typed != 2 || ms[0].Name != "" || num(ms[0].Alias) != alias || ms[0].Value != 0.71 || num(ms[0].Timestamp) != 1700000000100 {
			t.Fatalf("DDATA as Tahu reads it (%d datatypes from the DBIRTH): %+v", dd.Typed, ms)
		}
		q := ms[1].Properties["Quality"]
		if ms[1].Value != nil || q.Type != "Int32" || q.Value != 0.0 || num(ms[1].Properties["statusCode"].Value) != 2 {
			t.Fatalf("bad reading as Tahu reads it: %+v", ms[1])
		}
	})
}
