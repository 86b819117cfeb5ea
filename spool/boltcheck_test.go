package spool

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// resealed returns a segment file whose bbolt data is data, sealed with a
// valid trailer (CRC and all) naming spool: what a hand-made or foreign
// file whose trailer CRC passes looks like.
func resealed(data []byte, sum segmentSummary, spool Identity) []byte {
	out := append([]byte(nil), data...)
	tr := trailer{DataLen: int64(len(data)), DataCRC: crc32c(data), segmentSummary: sum, Spool: spool}
	return append(out, tr.encode()...)
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// fixMeta rewrites the checksum of the meta page at off after a change.
func fixMeta(data []byte, off int) {
	m := data[off+pageHeaderSize : off+pageHeaderSize+metaSize]
	h := fnv.New64a()
	h.Write(m[:56])
	binary.LittleEndian.PutUint64(m[56:], h.Sum64())
}

// oneSegment builds a spool of n records in one segment and returns its
// bbolt data, trailer summary and identity.
func oneSegment(t testing.TB, n int) (data []byte, sum segmentSummary, id Identity) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	opts := fastOptions()
	// Low-wear: the QoS 1 records close groups early, and low-latency would
	// seal each group as a segment of its own; here they share the active
	// segment, sealed at Close.
	opts.Profile = ProfileLowWear
	opts.GroupWindow, opts.SegmentMaxAge = 10e9, 10e9 // one segment, sealed at Close
	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := 0; i < n; i++ {
		recs = append(recs, testRecord(i, 300))
	}
	for _, r := range recs {
		a.Append(r, nil)
	}
	a.Close()
	segs, _ := listSegments(dir, sealedExt)
	if len(segs) != 1 {
		t.Fatalf("%d segments", len(segs))
	}
	b, _ := os.ReadFile(filepath.Join(dir, segs[0].Name))
	tr, err := readTrailer(fileBytes(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return b[:tr.DataLen], tr.segmentSummary, tr.Spool
}

type fileBytes []byte

func (b fileBytes) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readSegmentFile puts file into a fresh spool folder of identity id as
// its only sealed segment (id 1), drains it through a reader (a writer's,
// or an inspecting one: no syncs, for the fuzzer's speed) and returns what
// it read and counted. A fault or panic fails the test (or kills the test
// binary: what the guard is for).
func readSegmentFile(t testing.TB, file []byte, id Identity, inspect bool) ([]Record, ReaderStats) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	os.MkdirAll(filepath.Join(dir, quarantineDir), 0o700)
	ino, _ := folderInode(dir)
	b, _ := json.Marshal(IdentityInfo{Format: identityFormat, ID: id, FolderInode: ino})
	os.WriteFile(filepath.Join(dir, identityFile), b, 0o600)
	if err := os.WriteFile(filepath.Join(dir, segmentName(1, sealedExt)), file, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReader(dir, ReaderOptions{Inspect: inspect})
	if err != nil {
		t.Fatal(err)
	}
	recs, poss := readFrom(t, r, Position{})
	if !inspect && len(poss) > 0 {
		if err := r.Release(poss[len(poss)-1]); err != nil {
			t.Fatal(err)
		}
	}
	// Verify, the CLI's full check, must not crash on it either.
	if _, err := Verify(dir); err != nil {
		t.Fatal(err)
	}
	return recs, r.Stats()
}

// A sealed segment whose trailer CRC passes but whose bbolt content is
// inconsistent made bbolt fault (SIGSEGV/SIGBUS) and killed the writer at
// every restart. Now its structure is checked first: it is salvaged and
// counted, and the process goes on.
func TestReader_Cursor_InconsistentBoltWithValidCRC(t *testing.T) {
	data, sum, id := oneSegment(t, 200)
	ps := defaultBoltPage
	le := binary.LittleEndian
	cases := map[string]func(d []byte){
		"root bucket page far past the file": func(d []byte) {
			for _, off := range []int{0, ps} {
				le.PutUint64(d[off+pageHeaderSize+16:], 1<<40)
				fixMeta(d, off)
			}
		},
		"high-water mark past the file": func(d []byte) {
			for _, off := range []int{0, ps} {
				le.PutUint64(d[off+pageHeaderSize+40:], 1<<30)
				fixMeta(d, off)
			}
		},
		"leaf element count over the page": func(d []byte) {
			for p := 2; p*ps < len(d); p++ {
				if le.Uint16(d[p*ps+8:]) == leafPageFlag {
					le.PutUint16(d[p*ps+10:], 0xffff)
				}
			}
		},
		"element offsets outside the page": func(d []byte) {
			for p := 2; p*ps < len(d); p++ {
				if le.Uint16(d[p*ps+8:]) == leafPageFlag {
					le.PutUint32(d[p*ps+pageHeaderSize+4:], 1<<31)
				}
			}
		},
		"a branch page pointing at itself": func(d []byte) {
			for p := 2; p*ps < len(d); p++ {
				if le.Uint16(d[p*ps+8:]) == branchPageFlag {
					le.PutUint64(d[p*ps+pageHeaderSize+8:], uint64(p))
				}
			}
		},
		"garbage": func(d []byte) {
			for i := range d {
				d[i] = byte(i*7 + i>>9)
			}
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			d := append([]byte(nil), data...)
			damage(d)
			recs, st := readSegmentFile(t, resealed(d, sum, id), id, false)
			for _, r := range recs {
				if r.Seq < sum.FirstSeq || r.Seq > sum.LastSeq {
					t.Fatalf("read a record of Seq %d", r.Seq)
				}
			}
			if st.SegmentsDamaged+st.SegmentsSetAside != 1 {
				t.Fatalf("stats %+v", st)
			}
			// Every record the trailer counted is read, quarantined or lost.
			if got := uint64(len(recs)) + st.RecordsQuarantined + st.RecordsLost + st.RecordsSetAside; got != sum.Records {
				t.Fatalf("%d records read, quarantined, lost or set aside of %d: %+v", got, sum.Records, st)
			}
		})
	}
}

// FuzzSegmentFile feeds whole segment files to a writer's reader. The
// first byte chooses how: odd, the rest is bbolt data sealed with a valid
// trailer of the folder's spool (so the bbolt checks are what stands
// between the file and a fault); even, the rest is the file as it is.
// Whatever the file, the process goes on, and the records read stay within
// what the trailer claims. Seeds run as a normal test; a short fuzz run:
//
//	go test ./spool -run '^$' -fuzz FuzzSegmentFile -fuzztime 2m -fuzzminimizetime 5s
//
// (the default minimization of 60 s per new input leaves a short run idle).
func FuzzSegmentFile(f *testing.F) {
	data, sum, id := oneSegment(f, 40)
	// Seeds of the pages in use only, not the room bbolt grew the file
	// by: the fuzzer's time goes with the input's length.
	ps := binary.LittleEndian.Uint32(data[pageHeaderSize+8:])
	data = data[:binary.LittleEndian.Uint64(data[pageHeaderSize+40:])*uint64(ps)]
	f.Add(append([]byte{1}, data...))
	f.Add(append([]byte{0}, resealed(data, sum, id)...))
	f.Add(append([]byte{1}, data[:len(data)/2]...))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 || len(in) > 1<<20 {
			return
		}
		file := in[1:]
		if in[0]&1 == 1 {
			file = resealed(file, sum, id)
		}
		recs, st := readSegmentFile(t, file, id, true)
		if uint64(len(recs)) > max(sum.Records, uint64(len(file))/recordOverhead) {
			t.Fatalf("%d records out of a %d-byte file", len(recs), len(file))
		}
		_ = st
	})
}

// A fault on a mapping (here SIGBUS: the mapped file was cut short under
// it) is an error inside guardBolt, not the end of the process.
func TestGuardBolt_FaultOnMappingIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, make([]byte, 2*os.Getpagesize()), 0o600)
	f, _ := os.Open(path)
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, 2*os.Getpagesize(), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	os.Truncate(path, 0)
	var b byte
	err = guardBolt(func() { b = m[os.Getpagesize()+1] })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read past a truncated mapping: %v (byte %d)", err, b)
	}
	if err := guardBolt(func() { panic("inside bbolt") }); !errors.Is(err, ErrCorrupt) || !contains(err.Error(), "inside bbolt") {
		t.Fatalf("a panic: %v", err)
	}
}
