// Package checksum holds the two Modbus serial-line checks: the RTU CRC-16
// and the ASCII LRC. The driver (internal/modbus) and its test harness
// (internal/modbus/modbustest) both frame with it; the published example
// vectors in its tests pin it, so sharing it costs the harness no
// independence.
package checksum

// CRC16 is the Modbus RTU CRC (reflected polynomial 0xA001, initial 0xFFFF).
// It goes on the wire low byte first.
func CRC16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// LRC is the Modbus ASCII longitudinal redundancy check: the two's
// complement of the byte sum of unit, function and data.
func LRC(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}
