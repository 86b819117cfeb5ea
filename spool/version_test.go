package spool

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// rewriteRecord changes one record of a sealed segment in place through
// bbolt and seals it again with a valid trailer, as a newer meshingest
// would have written it.
func rewriteRecord(t *testing.T, path string, seq uint64, change func(enc []byte) []byte) {
	t.Helper()
	b, _ := os.ReadFile(path)
	tr, err := readTrailer(fileBytes(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, tr.DataLen); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(recordsBucket)
		return bk.Put(seqKey(seq), change(append([]byte(nil), bk.Get(seqKey(seq))...)))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	defer f.Close()
	if err := appendTrailer(f, tr.segmentSummary, tr.Spool); err != nil {
		t.Fatal(err)
	}
}

// asVersion2 makes enc a record of version 2 (the layout of version 1, for
// the test's "newer" build to read) with a valid checksum.
func asVersion2(enc []byte) []byte {
	enc[0] = 2
	n := len(enc) - recordCRCSize
	binary.LittleEndian.PutUint32(enc[n:], crc32.Checksum(enc[:n], castagnoli))
	return enc
}

// A record of a newer format was logged as quarantined but never written
// to quarantine/, and its segment was deleted with it. Now it is in
// quarantine/ before its segment can be released, and requeued after the
// upgrade.
func TestReader_Cursor_NewerRecordVersionIsReallyQuarantined(t *testing.T) {
	dir := newSpoolDir(t)
	orig := buildSpool(t, dir, 300)
	segs, _ := listSegments(dir, sealedExt)
	newer := segs[0].ID + 5
	rewriteRecord(t, filepath.Join(dir, segs[0].Name), newer, asVersion2)

	var events []QuarantineEvent
	r, _ := OpenReader(dir, ReaderOptions{OnQuarantine: func(e QuarantineEvent) { events = append(events, e) }})
	read, _ := drainAfter(t, r, Position{Spool: r.Identity()})
	if len(read) != len(orig)-1 || containsSeq(read, newer) {
		t.Fatalf("read %d of %d records", len(read), len(orig))
	}
	if st := r.Stats(); st.RecordsQuarantined != 1 || len(events) != 1 || !contains(events[0].Reason, "unknown record version 2") {
		t.Fatalf("stats %+v, events %+v", st, events)
	}
	if segs2, _ := listSegments(dir, sealedExt); len(segs2) != 0 {
		t.Fatalf("segments left after draining: %v", segs2)
	}
	items, _ := ListQuarantine(dir)
	if len(items) != 1 || items[0].Kind != "record" || items[0].Seq != newer {
		t.Fatalf("quarantine: %+v", items)
	}

	// This build cannot requeue it: it stays.
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	res, _ := Requeue(a, nil)
	if len(res) != 1 || res[0].Err == "" {
		t.Fatalf("requeue before the upgrade: %+v", res)
	}
	// The upgrade: a build that reads version 2.
	readableRecordVersion = 2
	res, _ = Requeue(a, nil)
	readableRecordVersion = recordVersion
	a.Close()
	if len(res) != 1 || res[0].Err != "" {
		t.Fatalf("requeue after the upgrade: %+v", res)
	}
	back, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	if len(back) != 1 || !sameContent(back[0], orig[newer]) {
		t.Fatalf("requeued: %+v", back)
	}
	if items, _ := ListQuarantine(dir); len(items) != 0 {
		t.Fatalf("quarantine after requeue: %+v", items)
	}
}
