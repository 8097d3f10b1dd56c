package model

import (
	"math"
	"time"
)

// CNC machine: a machining centre producing one part type in two shifts.
//
// Planned time is 06:00-22:00; outside it the control is stopped. In a shift
// the machine alternates between running a program (cycle time 1.05-1.3 x the
// ideal cycle time, made of roughing, finishing and tool-change segments with
// matching spindle speed, load and feed) and idle part changes of 30-90 s.
// A healthy machine raises no alarm: random alarms are a fault, injected as
// degradation "alarms" (level 0-4: alarms per running hour, each holding the
// machine in alarm 5-20 minutes with an alarm code 1000-1390). part_count
// increments at the end of each completed cycle. program_state indices:
// 0 stopped, 1 idle, 2 running, 3 alarm. Degradation "tool_wear" (level 0-1)
// raises spindle load by up to 40 % and stretches the cycle by up to 20 %.
var cncDef = classDef{
	signals: []string{"spindle_speed", "spindle_load", "feed_rate", "feed_override", "program_state", "part_count", "alarm_code"},
	nameplate: map[string]float64{
		"rated_spindle_speed": 12000, // /min
		"ideal_cycle_time":    240,   // s per part
	},
	degrade: map[string]float64{"tool_wear": 1, "alarms": 4},
	build:   func(b *base) Model { return &cnc{base: b} },
}

const (
	cncStopped = 0
	cncIdle    = 1
	cncRunning = 2
	cncAlarm   = 3
)

type cnc struct {
	*base
	init     bool
	state    int
	left     time.Duration // remaining in the current state
	cycle    time.Duration // current cycle length
	parts    float64
	alarm    float64
	override float64
	speed    float64
	load     float64
}

func (c *cnc) Step(now time.Time, dt time.Duration) {
	np := c.np
	if !c.init {
		c.init = true
		c.parts = 52000
		c.override = 100
	}
	h := hourOfDay(now)
	planned := h >= 6 && h < 22
	wear := c.deg("tool_wear")
	c.left -= dt
	switch {
	case !planned:
		c.state, c.alarm = cncStopped, 0
	case c.state == cncStopped:
		c.state, c.left = cncIdle, time.Duration(60+120*c.rng.Float64())*time.Second
	case c.state == cncRunning && c.deg("alarms") > 0 && c.rng.Float64() < dt.Hours()*c.deg("alarms"):
		c.state = cncAlarm
		c.left = time.Duration(5+15*c.rng.Float64()) * time.Minute
		c.alarm = float64(1000 + c.rng.IntN(40)*10)
	case c.left > 0:
	case c.state == cncRunning:
		c.parts++
		c.state, c.left = cncIdle, time.Duration(30+60*c.rng.Float64())*time.Second
	default: // idle or alarm over: start a cycle
		c.state, c.alarm = cncRunning, 0
		ideal := np["ideal_cycle_time"]
		c.cycle = time.Duration(ideal*(1.05+0.25*c.rng.Float64())*(1+0.2*wear)) * time.Second
		c.left = c.cycle
		if c.rng.Float64() < 0.1 {
			c.override = []float64{80, 90, 100, 110, 120}[c.rng.IntN(5)]
		}
	}
	rated := np["rated_spindle_speed"]
	speed, load, feed := 0.0, 0.0, 0.0
	if c.state == cncRunning && c.cycle > 0 {
		f := 1 - float64(c.left)/float64(c.cycle) // progress through the cycle
		switch {
		case f < 0.05 || (f > 0.55 && f < 0.6): // tool change
		case f < 0.55: // roughing
			speed, load, feed = 0.45*rated, 75, 1800
		default: // finishing
			speed, load, feed = 0.85*rated, 28, 900
		}
		load *= 1 + 0.4*wear
		feed *= c.override / 100
	}
	c.speed = lag(c.speed, speed, dt, time.Second)
	c.load = lag(c.load, load, dt, time.Second)
	v := c.v
	v[0] = c.speed
	v[1] = clamp(c.load+c.noise(1)*math.Min(1, c.load), 0, 150)
	v[2] = feed
	v[3] = c.override
	v[4] = float64(c.state)
	v[5] = c.parts
	v[6] = c.alarm
}
