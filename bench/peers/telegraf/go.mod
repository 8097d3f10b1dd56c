// A separate module so Telegraf never enters Smelter's go.mod: make bench-peers
// builds github.com/influxdata/telegraf/cmd/telegraf from here with only the
// plugins the side-by-side needs (bench/peers/README.md).
module github.com/smelterio/smelter/bench/peers/telegraf

go 1.26

require github.com/influxdata/telegraf v1.37.2
