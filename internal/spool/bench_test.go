package spool

import (
	"context"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

const benchRecord = 10 << 10 // one batch of ~100 readings as JSON

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds process CPU per op (all goroutines, syscalls included) and
// records/s next to ns/op.
func reportCPU(b *testing.B, cpu0 time.Duration, start time.Time, n int) {
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/op")
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
}

func benchSpool(b *testing.B, fsync string, cache int64) *Spool {
	cfg := Config{Dir: b.TempDir(), Fsync: fsync, MaxBytes: 8 << 30, CacheBytes: cache}
	s, err := Open(cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

var benchTemplate = payload(nil, 0, benchRecord-24)

// encodeBench costs what a real encoder's final copy costs: the seq is
// formatted in, the rest copied from a prepared batch.
func encodeBench(seq uint64, dst []byte) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, benchTemplate[1:]...)
}

// BenchmarkAppend: one 10 KB record per op, no reader.
func BenchmarkAppend(b *testing.B) {
	for _, policy := range []string{FsyncNever, FsyncInterval, FsyncAlways} {
		b.Run(policy, func(b *testing.B) {
			s := benchSpool(b, policy, 0)
			ctx := context.Background()
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			cpu0, start, n := cpuTime(), time.Now(), 0
			for b.Loop() {
				if _, err := s.Append(ctx, "smelter.v1.site.cls.asset.data", encodeBench); err != nil {
					b.Fatal(err)
				}
				n++
			}
			reportCPU(b, cpu0, start, n)
		})
	}
}

// BenchmarkLive is the gateway's hot path per batch: append, then each
// uplink reader reads it (from the tail cache) and commits it.
func BenchmarkLive(b *testing.B) {
	for _, policy := range []string{FsyncNever, FsyncInterval} {
		for _, readers := range []int{1, 2} {
			b.Run(policy+"/readers-"+strconv.Itoa(readers), func(b *testing.B) {
				s := benchSpool(b, policy, 0)
				rs := make([]*Reader, readers)
				for i := range rs {
					rs[i], _ = s.Reader("r" + strconv.Itoa(i))
				}
				ctx := context.Background()
				b.SetBytes(benchRecord)
				b.ReportAllocs()
				cpu0, start, n := cpuTime(), time.Now(), 0
				for b.Loop() {
					appendRead(ctx, b, s, rs, encodeBench)
					n++
				}
				reportCPU(b, cpu0, start, n)
			})
		}
	}
}

// BenchmarkLiveLarge is BenchmarkLive with records of an OPC UA device's
// 1,000-reading batch (~150 KB; sizes vary by up to 5 %), two readers, the
// default cache: what the arena's size classes are for.
func BenchmarkLiveLarge(b *testing.B) {
	largeTemplate := payload(nil, 0, 157_500)
	s := benchSpool(b, FsyncInterval, 0)
	rs := make([]*Reader, 2)
	for i := range rs {
		rs[i], _ = s.Reader("r" + strconv.Itoa(i))
	}
	ctx := context.Background()
	b.SetBytes(150_000)
	b.ReportAllocs()
	cpu0, start, n := cpuTime(), time.Now(), 0
	for b.Loop() {
		size := 150_000 + n*7919%7500
		appendRead(ctx, b, s, rs, func(seq uint64, dst []byte) []byte {
			dst = append(dst, `{"seq":`...)
			dst = strconv.AppendUint(dst, seq, 10)
			return append(dst, largeTemplate[len(`{"seq":0`):size]...)
		})
		n++
	}
	reportCPU(b, cpu0, start, n)
}

// appendRead appends one record encoded by encode, and each of rs reads
// it (the only record it is given) and commits it: the live path.
func appendRead(ctx context.Context, b *testing.B, s *Spool, rs []*Reader, encode func(uint64, []byte) []byte) {
	seq, err := s.Append(ctx, "smelter.v1.site.cls.asset.data", encode)
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range rs {
		recs, err := r.Next(ctx, 100, 0)
		if err != nil || len(recs) != 1 || recs[0].Seq != seq {
			b.Fatalf("next: %v %v", len(recs), err)
		}
		if err := r.Commit(seq); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplay reads a backlog from the segment files (cache disabled in
// effect), 100 records per Next as an uplink catching up would, and commits
// each batch. ns/op is per record.
func BenchmarkReplay(b *testing.B) {
	const backlog = 4000 // 40 MB
	s := benchSpool(b, FsyncNever, 1)
	ctx := context.Background()
	for range backlog {
		if _, err := s.Append(ctx, "smelter.v1.site.cls.asset.data", encodeBench); err != nil {
			b.Fatal(err)
		}
	}
	r, _ := s.Reader("nats")
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	cpu0, start, n := cpuTime(), time.Now(), 0
	var recs []Record
	for b.Loop() {
		if len(recs) == 0 {
			var err error
			s.mu.Lock()
			if r.pos > s.last {
				r.pos = 1 // start the backlog over
			}
			s.mu.Unlock()
			if recs, err = r.Next(ctx, 100, 0); err != nil {
				b.Fatal(err)
			}
		}
		recs = recs[1:]
		n++
	}
	reportCPU(b, cpu0, start, n)
	if counter(s.m.diskReads.WithLabelValues("nats")) == 0 {
		b.Fatal("replay did not read from disk")
	}
}

// BenchmarkAppendConcurrent: 100 goroutines append 10 KB records at once,
// as the gateway's device goroutines do on a shared poll tick. With group
// commit, concurrent appends share a write (writes/op below 1).
func BenchmarkAppendConcurrent(b *testing.B) {
	for _, policy := range []string{FsyncInterval, FsyncAlways} {
		b.Run(policy, func(b *testing.B) {
			s := benchSpool(b, policy, 0)
			ctx := context.Background()
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			b.SetParallelism(max(1, 100/runtime.GOMAXPROCS(0)))
			cpu0, start := cpuTime(), time.Now()
			w0 := writesOf(s)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Append(ctx, "smelter.v1.site.cls.asset.data", encodeBench); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportCPU(b, cpu0, start, b.N)
			if w0 >= 0 {
				b.ReportMetric((writesOf(s)-w0)/float64(b.N), "writes/op")
			}
		})
	}
}
