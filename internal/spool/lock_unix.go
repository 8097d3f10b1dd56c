//go:build unix

package spool

import (
	"fmt"
	"os"
	"syscall"
)

// lockDir takes an exclusive advisory lock so two processes never share a
// spool directory.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: lock %s: another process uses this spool: %w", path, err)
	}
	return f, nil
}
