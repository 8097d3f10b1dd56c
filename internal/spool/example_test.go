package spool_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/smelterio/smelter/internal/spool"
)

// Open a spool, append two records, read them with a durable reader and
// commit what the "broker" confirmed. A reader opened again after a
// restart starts after its committed cursor.
func Example() {
	dir, err := os.MkdirTemp("", "spool-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

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
	for _, v := range []string{"21.5", "22.0"} {
		// encode appends the payload to dst; it learns the record's seq
		// first, so a batch can carry it.
		seq, err := sp.Append(ctx, "smelter.v1.plant1.motor.m-1.data", func(seq uint64, dst []byte) []byte {
			return fmt.Appendf(dst, `{"seq":%d,"value":%s}`, seq, v)
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("appended seq", seq)
	}
	recs, err := r.Next(ctx, 100, 0)
	if err != nil {
		log.Fatal(err)
	}
	for _, rec := range recs {
		fmt.Printf("read seq %d on %s: %s\n", rec.Seq, rec.Subject, rec.Data)
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
	fmt.Println("after restart: last seq", sp.LastSeq(), "cursor", r.Committed())
	// Output:
	// appended seq 1
	// appended seq 2
	// read seq 1 on smelter.v1.plant1.motor.m-1.data: {"seq":1,"value":21.5}
	// read seq 2 on smelter.v1.plant1.motor.m-1.data: {"seq":2,"value":22.0}
	// lag after commit: 0
	// after restart: last seq 2 cursor 2
}
