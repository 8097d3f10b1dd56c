package spool_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/smelterio/smelter/internal/spool"
)

// Open a spool, append two records, read them with a durable reader and
// commit what the "broker" confirmed. A reader opened again after a
// restart starts after its committed cursor. A new spool's first seq lies
// just above the wall clock in Unix microseconds (spool.SeqFloor), so the
// example prints seqs relative to the first one.
func Example() {
	dir, err := os.MkdirTemp("", "spool-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	floor, _ := spool.SeqFloor(time.Now())
	sp, err := spool.Open(spool.Config{Dir: dir}, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	// The reader exists before the appends, so it holds them back from
	// deletion until it commits.
	r, err := sp.Reader("nats")
	if err != nil {
		log.Fatal(err)
	}
	first := sp.LastSeq() + 1
	fmt.Println("first seq above the floor taken before Open:", first > floor)
	for _, v := range []string{"21.5", "22.0"} {
		// encode appends the payload to dst; it learns the record's seq
		// first, so a batch can carry it.
		seq, err := sp.Append(ctx, "smelter.v1.plant1.motor.m-1.data", func(seq uint64, dst []byte) []byte {
			return fmt.Appendf(dst, `{"seq":%d,"value":%s}`, seq, v)
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("appended seq first +", seq-first)
	}
	recs, err := r.Next(ctx, 100, 0)
	if err != nil {
		log.Fatal(err)
	}
	for _, rec := range recs {
		fmt.Printf("read seq first + %d on %s, carrying its seq: %v\n", rec.Seq-first, rec.Subject,
			bytes.HasPrefix(rec.Data, fmt.Appendf(nil, `{"seq":%d,`, rec.Seq)))
	}
	// Commit only after the broker confirmed: the cursor moves and
	// survives a restart.
	if err := r.Commit(recs[len(recs)-1].Seq); err != nil {
		log.Fatal(err)
	}
	fmt.Println("lag after commit:", r.Lag().Records)
	if err := sp.Close(); err != nil {
		log.Fatal(err)
	}

	sp, err = spool.Open(spool.Config{Dir: dir}, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sp.Close()
	r, err = sp.Reader("nats")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("after restart: last seq first +", sp.LastSeq()-first, "cursor first +", r.Committed()-first)
	// Output:
	// first seq above the floor taken before Open: true
	// appended seq first + 0
	// appended seq first + 1
	// read seq first + 0 on smelter.v1.plant1.motor.m-1.data, carrying its seq: true
	// read seq first + 1 on smelter.v1.plant1.motor.m-1.data, carrying its seq: true
	// lag after commit: 0
	// after restart: last seq first + 1 cursor first + 1
}
