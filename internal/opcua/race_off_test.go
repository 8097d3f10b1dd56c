//go:build !race

package opcua

// raceEnabled: see race_on_test.go.
const raceEnabled = false
