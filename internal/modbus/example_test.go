package modbus_test

import (
	"errors"
	"fmt"

	"github.com/smelterio/smelter/internal/modbus"
)

// A Status is an error: test a cycle's Err with errors.Is, read a
// mismatch's two values with errors.As, publish StatusOf(err) as the
// reading's status.
func ExampleStatus() {
	quarantined := fmt.Errorf("holding 6 unit 1: %w", modbus.Status(2)|modbus.StatusQuarantined)
	fmt.Println(errors.Is(quarantined, modbus.Status(2)), errors.Is(quarantined, modbus.StatusQuarantined))
	fmt.Printf("%#x %s\n", uint32(modbus.StatusOf(quarantined)), quarantined)

	wrongUnit := fmt.Errorf("read holding 0+4 unit 3: %w", &modbus.ReplyError{Status: modbus.StatusWrongUnit, Want: 3, Got: 1})
	var re *modbus.ReplyError
	fmt.Println(errors.Is(wrongUnit, modbus.StatusWrongUnit), errors.As(wrongUnit, &re) && re.Got == 1, modbus.StatusOf(wrongUnit).Kind())
	fmt.Println(wrongUnit)
	// Output:
	// true true
	// 0x10002 holding 6 unit 1: modbus: exception 2 (illegal data address), address quarantined
	// true true wrong_unit
	// read holding 0+4 unit 3: modbus: reply from unit 1 to a request for unit 3
}
