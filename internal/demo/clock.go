package demo

import "time"

// DefaultStart is the plant clock's time of day when smelter-demo starts
// without -start: a working morning, so shifts are on (diesel set, CNC,
// excavator, compressors loaded) and the PV strings see daylight whatever
// the wall clock says.
const DefaultStart = "10:00"

// the -start flag itself is read by fleet.ParseStart

// pollInterval is the gateway's poll interval (wall time) for a plant run at
// speed: one poll per simulated second up to the 250 ms floor, so at -speed
// 60 a batch covers 15 s of plant time and KPI windows still hold dozens of
// samples.
func pollInterval(speed float64) time.Duration {
	if speed <= 1 {
		return time.Second
	}
	return max(time.Duration(float64(time.Second)/speed), 250*time.Millisecond)
}

// kpiWindow is the demo's KPI window (plant time): 2 minutes so the energy
// page fills within the first minutes at real speed, longer when the plant
// runs fast (10 s of wall time per window, in whole minutes) so the page is
// not redrawn many times a second.
func kpiWindow(speed float64) time.Duration {
	w := time.Duration(speed * float64(10*time.Second)).Round(time.Minute)
	return max(w, 2*time.Minute)
}
