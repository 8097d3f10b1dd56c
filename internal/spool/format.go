package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FormatVersion is the on-disk format of the spool's segments, cursor and
// high-water-mark files that this build reads and writes. It is recorded in
// the file FormatFileName in the spool directory and checked at Open, so an
// upgrade or a downgrade never misreads a spool written by another format:
// a different version is refused before anything is read or written
// (docs/operations.md, "Upgrades").
const FormatVersion = 1

// FormatFileName is the name of the format file in the spool directory.
const FormatFileName = "FORMAT"

// formatMagic starts the format file: "smelter-spool <version>\n".
const formatMagic = "smelter-spool "

// ErrFormat is wrapped by Open's error when the directory holds a spool of
// another format version (or an unreadable format file).
var ErrFormat = errors.New("spool format")

// checkFormat reads dir's format file. A missing file means a new spool or
// one written before the format was recorded (version 1): the file is
// written then. A failure to write it (a full disk) is logged and retried at
// the next Open; it never stops the spool, which must keep running to drain.
func checkFormat(dir string, log *slog.Logger) error {
	path := filepath.Join(dir, FormatFileName)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if werr := writeFormat(path); werr != nil {
			log.Warn("spool format file not written; retried at the next start", "file", path, "err", werr)
		}
		return nil
	case err != nil:
		return fmt.Errorf("%w: read %s: %w", ErrFormat, path, err)
	}
	text := strings.TrimSpace(string(data))
	v, ok := strings.CutPrefix(text, strings.TrimSpace(formatMagic))
	n, perr := strconv.Atoi(strings.TrimSpace(v))
	if !ok || perr != nil || n < 1 {
		return fmt.Errorf("%w: %s does not say which format this spool has (want %q): not a smelter spool directory, or a damaged one",
			ErrFormat, path, formatMagic+strconv.Itoa(FormatVersion))
	}
	if n != FormatVersion {
		return fmt.Errorf("%w: %s holds a spool of format %d; this build reads format %d: drain it with the release that wrote it, or move the directory aside (docs/operations.md, Upgrades)",
			ErrFormat, dir, n, FormatVersion)
	}
	return nil
}

// writeFormat writes the format file atomically (temporary file, fsync,
// rename).
func writeFormat(path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.WriteString(formatMagic + strconv.Itoa(FormatVersion) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
