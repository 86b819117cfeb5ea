package writer

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/decoder"
	"github.com/rs/zerolog"
)

// BenchmarkPathState_Batch is the per-observation cost of resolved_path
// and neighbor_edges on the catch-up benchmark's traffic (27 observers per
// transmission, random paths over the corpus's 90 nodes): one op is one
// observation; each batch of 4,000 is flushed and committed, as the writer
// does.
//
//	go test -run '^$' -bench PathState -benchmem ./writer/
func BenchmarkPathState_Batch(b *testing.B) {
	ctx := context.Background()
	d, err := openDatabase(ctx, filepath.Join(b.TempDir(), "meshcore.db"), true, DBOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	if _, err := migrate(ctx, d.conn, zerolog.Nop()); err != nil {
		b.Fatal(err)
	}
	g := newTrafficGen(b, benchSeed, benchObservers, benchFanout, benchFanout, benchStart)
	for _, f := range g.adverts {
		p := decoder.DecodePacket(f, decoder.Options{})
		if n, ok := p.Node(); ok {
			mustExecConn(b, d.conn, `INSERT OR IGNORE INTO nodes (public_key) VALUES (?)`, n.PublicKey)
		}
	}
	type item struct {
		obs Observation
		oc  ObservationContext
	}
	observers := map[string]int64{}
	lastTx := map[decoder.ContentHash]int64{}
	var items []item
	for len(items) < 200_000 {
		r := g.next()
		parts := strings.Split(r.Topic, "/")
		if parts[3] != "packets" {
			continue
		}
		var m struct{ Raw string }
		json.Unmarshal(r.Payload, &m)
		f, err := decoder.DecodeFrame(m.Raw)
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
			obs: Observation{TransmissionID: tx, ObserverIdx: sql.NullInt64{Int64: observers[parts[2]], Valid: true},
				PathJSON: f.PathJSON(), Timestamp: r.ReceivedAt.Unix()},
			oc: ObservationContext{ReceivedAt: r.ReceivedAt, ObserverID: parts[2], Frame: &fr, NewTransmission: !seen},
		}
		if f.Type == decoder.TypeAdvert {
			if n, ok := decoder.DecodePacket(f, decoder.Options{}).Node(); ok {
				it.oc.FromPubkey = n.PublicKey
			}
		}
		items = append(items, it)
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
