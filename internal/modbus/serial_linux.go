package modbus

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

var bauds = map[int]uint32{1200: unix.B1200, 2400: unix.B2400, 4800: unix.B4800, 9600: unix.B9600,
	19200: unix.B19200, 38400: unix.B38400, 57600: unix.B57600, 115200: unix.B115200,
	230400: unix.B230400, 460800: unix.B460800, 921600: unix.B921600}

// openSerial opens a serial line raw (no echo, no line discipline, no flow
// control) with s's settings. The descriptor is non-blocking, so the
// returned file is pollable: deadlines bound every read and a canceled
// context interrupts it, and the drainer can read what is pending without
// waiting. Input already queued is left for the caller to drain and count.
func openSerial(path string, s SerialConfig) (*os.File, error) {
	rate, ok := bauds[s.Baud]
	if !ok {
		return nil, fmt.Errorf("serial: baud %d not supported", s.Baud)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("serial: open %s: %w", path, err)
	}
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("serial: %s is not a terminal: %w", path, err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL |
		unix.IXON | unix.IXOFF | unix.IXANY | unix.INPCK
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.CBAUD | unix.CRTSCTS
	t.Cflag |= unix.CREAD | unix.CLOCAL | rate
	if s.DataBits == 7 {
		t.Cflag |= unix.CS7
	} else {
		t.Cflag |= unix.CS8
	}
	switch s.Parity {
	case "E":
		t.Cflag |= unix.PARENB
		t.Iflag |= unix.INPCK // a byte with a parity error arrives as 0: the checksum rejects its frame
	case "O":
		t.Cflag |= unix.PARENB | unix.PARODD
		t.Iflag |= unix.INPCK
	}
	if s.StopBits == 2 {
		t.Cflag |= unix.CSTOPB
	}
	t.Ispeed, t.Ospeed = rate, rate
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("serial: set line %d %d%s%d on %s: %w", s.Baud, s.DataBits, s.Parity, s.StopBits, path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// quickAck sends the ACK the kernel may be delaying for what c received
// (TCP_QUICKACK): a converter that holds a small segment until its last one
// is acknowledged (Nagle) then sends it at once instead of ~40 ms later.
func quickAck(c syscall.RawConn) {
	_ = c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
}
