package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/tests/loadgen"
	"github.com/meshingest/meshingest/writer"
	"github.com/rs/zerolog"
)

// BenchmarkPathState_Batch is the per-observation cost of resolved_path
// and neighbor_edges on traffic shaped like the catch-up benchmark's (a
// loadgen mesh of 90 nodes heard by 27 of 60 observers per transmission,
// each over a path of its own): one op is one observation; each batch of
// 4,000 is flushed and committed, as the writer does.
//
//	go test -run '^$' -bench PathState -benchmem ./writer/jobs/
func BenchmarkPathState_Batch(b *testing.B) {
	ctx := context.Background()
	d := openDatabase(b, newDatabase(b))
	defer d.close()
	g := loadgen.New(loadgen.Options{Seed: 1, Nodes: 90, Observers: 60, Fanout: 27, StatusEvery: -1})
	type item struct {
		obs writer.Observation
		oc  writer.ObservationContext
	}
	observers := map[string]int64{}
	at := time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)
	lastTx := map[decoder.ContentHash]int64{}
	var items []item
	nodes := map[string]bool{}
	for len(items) < 200_000 {
		m := g.Next()
		parts := strings.Split(m.Topic, "/")
		if len(parts) != 4 || parts[3] != "packets" {
			continue
		}
		var msg struct{ Raw string }
		json.Unmarshal(m.Payload, &msg)
		f, err := decoder.DecodeFrame(msg.Raw)
		if err != nil {
			continue
		}
		tx, seen := lastTx[f.Hash]
		if !seen {
			tx = int64(len(lastTx) + 1)
			lastTx[f.Hash] = tx
		}
		if observers[parts[2]] == 0 {
			observers[parts[2]] = int64(len(observers) + 1)
		}
		fr := f
		it := item{
			obs: writer.Observation{TransmissionID: tx, ObserverIdx: sql.NullInt64{Int64: observers[parts[2]], Valid: true},
				PathJSON: f.PathJSON(), Timestamp: at.Unix()},
			oc: writer.ObservationContext{ReceivedAt: at, ObserverID: parts[2], Frame: &fr, NewTransmission: !seen},
		}
		at = at.Add(35 * time.Millisecond)
		if f.Type == decoder.TypeAdvert {
			if n, ok := decoder.DecodePacket(f, decoder.Options{}).Node(); ok {
				it.oc.FromPubkey = n.PublicKey
				nodes[n.PublicKey] = true
			}
		}
		items = append(items, it)
	}
	// Every node is known from the start, as in a database that has heard
	// the mesh for a while.
	for k := range nodes {
		mustExecConn(b, d.conn, `INSERT OR IGNORE INTO nodes (public_key) VALUES (?)`, k)
	}
	p := newPathState(zerolog.Nop(), 5)
	const batch = 4000
	mustExecConn(b, d.conn, "BEGIN IMMEDIATE")
	b.ResetTimer()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		it := items[i%len(items)]
		if err := p.BeforeObservation(ctx, d.conn, &it.obs, &it.oc); err != nil {
			b.Fatal(err)
		}
		if i%batch == batch-1 {
			if err := p.Flush(ctx, d.conn); err != nil {
				b.Fatal(err)
			}
			mustExecConn(b, d.conn, "COMMIT")
			p.Committed()
			mustExecConn(b, d.conn, "BEGIN IMMEDIATE")
		}
	}
	b.StopTimer()
	mustExecConn(b, d.conn, "COMMIT")
}
