package natswire

import (
	"sync"
	"syscall"
)

const guardSupported = true

// maxGuarded bounds the released chunks kept inaccessible (guard mode):
// about 4 GiB of address space at 256 KiB and well under the kernel's
// default of 65,530 mappings a process.
const maxGuarded = 16384

var guardedChunks struct {
	sync.Mutex
	list [][]byte // released, inaccessible, oldest first
}

// guardChunk maps an n-byte chunk outside the Go heap (guard mode).
func guardChunk(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic("natswire: guard mode: mmap of a chunk: " + err.Error())
	}
	return b
}

// guardRelease drops b's pages and makes its range inaccessible; past
// maxGuarded released chunks the oldest is unmapped.
func guardRelease(b []byte) {
	b = b[:cap(b)]
	if err := syscall.Madvise(b, syscall.MADV_DONTNEED); err != nil {
		panic("natswire: guard mode: madvise: " + err.Error())
	}
	if err := syscall.Mprotect(b, syscall.PROT_NONE); err != nil {
		panic("natswire: guard mode: mprotect: " + err.Error())
	}
	guardedChunks.Lock()
	defer guardedChunks.Unlock()
	guardedChunks.list = append(guardedChunks.list, b)
	if len(guardedChunks.list) > maxGuarded {
		_ = syscall.Munmap(guardedChunks.list[0])
		guardedChunks.list[0] = nil
		guardedChunks.list = guardedChunks.list[1:]
	}
}
