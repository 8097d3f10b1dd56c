package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/smelterio/smelter/simulators/modbusfront"
	"github.com/smelterio/smelter/simulators/opcuafront"
	"github.com/smelterio/smelter/simulators/regmap"
)

// serve is the device server process: -devices devices of -points points
// whose values all change every -interval, until stdin closes. It prints
// "ADDR <address>" per device, then "READY".
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	proto := fs.String("proto", "modbus", "modbus | opcua")
	first := fs.Int("first", 0, "index of the first device (names and node ids)")
	devices := fs.Int("devices", 1, "devices")
	points := fs.Int("points", 100, "points per device")
	interval := fs.Duration("interval", 100*time.Millisecond, "change period")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		cancel()
	}()
	var step func(round int, now time.Time)
	switch *proto {
	case "modbus":
		devs := make([]*modbusfront.Device, *devices)
		for i := range devs {
			devs[i] = modbusfront.NewDevice(nil, nil)
			f, err := modbusfront.New(modbusfront.Config{Name: fmt.Sprintf("dev-%03d", *first+i), Address: "127.0.0.1:0"},
				[]modbusfront.Unit{{ID: 1, Device: devs[i]}}, nil)
			if err != nil {
				return err
			}
			if err := f.Start(ctx); err != nil {
				return err
			}
			defer f.Stop()
			fmt.Printf("ADDR %s\n", f.Addr())
		}
		step = func(round int, _ time.Time) {
			for d, dev := range devs {
				img := &regmap.Image{Holding: make([]uint16, *points)}
				for i := range img.Holding {
					img.Holding[i] = uint16(1000 + i + d + round%1000)
				}
				dev.Publish(img)
			}
		}
	case "opcua":
		var assets []opcuafront.Asset
		var srcs []*source
		for d := range *devices {
			src := &source{}
			for i := range *points {
				src.signals = append(src.signals, fmt.Sprintf("s%05d", i))
				src.values = append(src.values, float64(i))
			}
			srcs = append(srcs, src)
			assets = append(assets, opcuafront.Asset{ID: fmt.Sprintf("ua-%03d", *first+d), Source: src})
		}
		f, err := opcuafront.New(opcuafront.Config{Security: []opcuafront.Security{{Policy: "None", Mode: "None"}}}, assets, nil)
		if err != nil {
			return err
		}
		if err := f.Start(ctx); err != nil {
			return err
		}
		defer func() { _ = f.Stop() }()
		for range *devices {
			fmt.Printf("ADDR %s\n", f.Endpoint())
		}
		step = func(round int, now time.Time) {
			for _, src := range srcs {
				for i := range src.values {
					src.values[i] = float64(i) + float64(round%1000)/1000
				}
			}
			f.Refresh(now)
		}
	default:
		return fmt.Errorf("-proto %q: want modbus or opcua", *proto)
	}
	step(0, time.Now())
	fmt.Println("READY")
	t := time.NewTicker(*interval)
	defer t.Stop()
	for round := 1; ; round++ {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			step(round, now)
		}
	}
}

// source is an OPC UA asset of generic signals.
type source struct {
	signals []string
	values  []float64
}

func (s *source) Class() string     { return "generic" }
func (s *source) Signals() []string { return s.signals }
func (s *source) Values() []float64 { return s.values }
