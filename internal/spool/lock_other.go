//go:build !unix

package spool

import (
	"fmt"
	"os"
)

// lockDir opens the lock file; other platforms get no advisory lock.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: lock: %w", err)
	}
	return f, nil
}
