//go:build race

package opcua

// raceEnabled: the race detector's sync.Pool drops a quarter of what is
// put back at random, so allocation counts of pooled paths vary.
const raceEnabled = true
