package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
)

// Salvage reads the records out of a segment file without trusting bbolt's
// meta pages or B+tree: it scans every page, parses what looks like a bbolt
// leaf page with bounds checks, and keeps each value whose record checksum
// holds. It is used for every unsealed segment a dead appender left behind
// (recovery) and for every sealed segment whose trailer does not verify
// (repair).
//
// Old copies of a leaf page (bbolt copies on write) hold the same records:
// a record is immutable once its Seq is assigned, so copies of one Seq are
// identical and one is kept. Two different valid records claiming one Seq
// cannot come from the appender; both are reported damaged.
//
// bbolt page layout read here (bbolt's on-disk format, version 2): a page
// starts with id u64, flags u16, count u16, overflow u32; a leaf page then
// has count elements of flags u32, pos u32, ksize u32, vsize u32, where pos
// is the key's offset from the element itself; a bucket value starts with
// root u64 and sequence u64 and, when root is 0, an inline leaf page.
const (
	pageHeaderSize     = 16
	leafElementSize    = 16
	leafPageFlag       = 0x02
	bucketLeafFlag     = 0x01
	bucketHeaderSize   = 16
	boltMagic          = 0xED0CDAED
	defaultBoltPage    = 4096
	maxSalvageValueLen = 1 << 31
)

// salvagedRecord locates an intact record's encoding in the file.
type salvagedRecord struct {
	Seq uint64
	Off int64
	Len int
	CRC uint32
}

// damagedRecord is a value delimited by a leaf element whose record fails
// its checks.
type damagedRecord struct {
	Seq    uint64 // from the bbolt key
	Raw    []byte
	Reason string
}

type salvageResult struct {
	Intact  []salvagedRecord // sorted by Seq, one per Seq
	Damaged []damagedRecord  // Seqs with no intact copy
	Pages   int
	// BadElements counts leaf elements that could not be delimited (their
	// offsets point outside the page): records lost without a trace.
	BadElements int
}

func (s *salvageResult) summary(f io.ReaderAt) segmentSummary {
	var sum segmentSummary
	buf := make([]byte, recordHeaderSize)
	for _, r := range s.Intact {
		if _, err := f.ReadAt(buf, r.Off); err == nil {
			sum.add(r.Seq, recordTime(buf))
		}
	}
	return sum
}

// salvageSegment scans f (size bytes) for the records of segment id.
func salvageSegment(f io.ReaderAt, size int64, id uint64) (*salvageResult, error) {
	ps := int64(boltPageSize(f))
	res := &salvageResult{}
	intact := map[uint64]int{} // Seq → index in res.Intact
	conflict := map[uint64]bool{}
	damaged := map[uint64]damagedRecord{}
	hdr := make([]byte, pageHeaderSize)
	for i := int64(0); i*ps < size; i++ {
		off := i * ps
		if _, err := f.ReadAt(hdr, off); err != nil && err != io.EOF {
			return nil, err
		}
		res.Pages++
		le := binary.LittleEndian
		if int64(le.Uint64(hdr[0:])) != i || le.Uint16(hdr[8:]) != leafPageFlag {
			continue
		}
		overflow := int64(le.Uint32(hdr[12:]))
		span := (overflow + 1) * ps
		if span > size-off || span <= 0 {
			span = size - off // truncated or damaged header: parse what is there
		}
		page := make([]byte, span)
		n, err := f.ReadAt(page, off)
		if err != nil && err != io.EOF {
			return nil, err
		}
		page = page[:n]
		visit := func(key, val []byte, valOff int64) {
			if len(key) != 8 {
				return
			}
			seq := binary.BigEndian.Uint64(key)
			reason := ""
			if err := checkRecord(val); err != nil {
				reason = err.Error()
			} else if recordSeq(val) != seq {
				reason = fmt.Sprintf("record says Seq %d under key %d", recordSeq(val), seq)
			} else if seq < id {
				reason = fmt.Sprintf("Seq %d is below the segment id %d", seq, id)
			}
			if reason != "" {
				if _, ok := damaged[seq]; !ok {
					damaged[seq] = damagedRecord{Seq: seq, Raw: bytes.Clone(val), Reason: reason}
				}
				return
			}
			crc := binary.LittleEndian.Uint32(val[len(val)-recordCRCSize:])
			if j, ok := intact[seq]; ok {
				if res.Intact[j].CRC != crc || res.Intact[j].Len != len(val) {
					conflict[seq] = true
				}
				return
			}
			intact[seq] = len(res.Intact)
			res.Intact = append(res.Intact, salvagedRecord{Seq: seq, Off: valOff, Len: len(val), CRC: crc})
		}
		res.BadElements += walkLeaf(page, off, 0, visit)
		if overflow > 0 && overflow*ps < size-off {
			i += overflow // the rest of this page's span holds its values
		}
	}
	for seq := range conflict {
		j := intact[seq]
		r := res.Intact[j]
		raw := make([]byte, r.Len)
		f.ReadAt(raw, r.Off)
		damaged[seq] = damagedRecord{Seq: seq, Raw: raw, Reason: "two different records claim this Seq"}
	}
	kept := res.Intact[:0]
	for _, r := range res.Intact {
		if !conflict[r.Seq] {
			kept = append(kept, r)
		}
	}
	res.Intact = kept
	sort.Slice(res.Intact, func(i, j int) bool { return res.Intact[i].Seq < res.Intact[j].Seq })
	for seq, d := range damaged {
		if _, ok := intact[seq]; ok && !conflict[seq] {
			continue // an intact copy exists
		}
		res.Damaged = append(res.Damaged, d)
	}
	sort.Slice(res.Damaged, func(i, j int) bool { return res.Damaged[i].Seq < res.Damaged[j].Seq })
	return res, nil
}

// walkLeaf calls visit for every plain key/value of a leaf page (and of the
// inline bucket pages inside it), with the value's offset in the file. It
// returns how many elements point outside the page.
func walkLeaf(page []byte, base int64, depth int, visit func(key, val []byte, valOff int64)) (bad int) {
	if len(page) < pageHeaderSize {
		return 0
	}
	le := binary.LittleEndian
	count := int(le.Uint16(page[10:]))
	for e := 0; e < count; e++ {
		eo := pageHeaderSize + e*leafElementSize
		if eo+leafElementSize > len(page) {
			return bad + count - e
		}
		flags := le.Uint32(page[eo:])
		pos, ksize, vsize := uint64(le.Uint32(page[eo+4:])), uint64(le.Uint32(page[eo+8:])), uint64(le.Uint32(page[eo+12:]))
		ks := uint64(eo) + pos
		vs := ks + ksize
		ve := vs + vsize
		if ve > uint64(len(page)) || vsize > maxSalvageValueLen {
			bad++
			continue
		}
		key, val := page[ks:vs], page[vs:ve]
		switch {
		case flags&bucketLeafFlag != 0:
			// An inline bucket: header, then a leaf page. Buckets do not
			// nest in a segment, so one level is enough.
			if depth == 0 && len(val) > bucketHeaderSize+pageHeaderSize && le.Uint64(val) == 0 &&
				le.Uint16(val[bucketHeaderSize+8:]) == leafPageFlag {
				bad += walkLeaf(val[bucketHeaderSize:], base+int64(vs)+bucketHeaderSize, depth+1, visit)
			}
		case flags == 0:
			visit(key, val, base+int64(vs))
		}
	}
	return bad
}

// boltPageSize reads the page size from a valid-looking meta page, or
// assumes the default.
func boltPageSize(f io.ReaderAt) int {
	b := make([]byte, pageHeaderSize+12)
	for _, off := range []int64{0, defaultBoltPage} {
		if _, err := f.ReadAt(b, off); err != nil {
			continue
		}
		le := binary.LittleEndian
		if le.Uint32(b[16:]) != boltMagic {
			continue
		}
		if ps := int(le.Uint32(b[24:])); ps >= 512 && ps <= 1<<16 && ps&(ps-1) == 0 {
			return ps
		}
	}
	return defaultBoltPage
}

// readSalvaged reads one intact record found by salvage.
func readSalvaged(f io.ReaderAt, r salvagedRecord) (Record, error) {
	buf := make([]byte, r.Len)
	if _, err := f.ReadAt(buf, r.Off); err != nil {
		return Record{}, err
	}
	return decodeRecord(buf)
}

// writeSalvagedSegment writes the records of res (read from src) as a sealed
// segment at tmpPath and renames it to sealedPath. sync makes a file
// durable and syncDir the folder; the caller counts them.
func writeSalvagedSegment(src io.ReaderAt, size int64, res *salvageResult, id uint64, spool Identity, tmpPath, sealedPath string, tmpl []byte,
	sync func(*os.File) error, syncFolder func() error) error {
	os.Remove(tmpPath) // a leftover of an earlier attempt
	w, err := createSegment(tmpPath, id, spool, tmpl, int(min(size, 1<<30)))
	if err != nil {
		return err
	}
	fail := func(err error) error {
		w.close()
		os.Remove(tmpPath)
		return err
	}
	const chunk = 4096
	for i := 0; i < len(res.Intact); i += chunk {
		var encs [][]byte
		for _, r := range res.Intact[i:min(i+chunk, len(res.Intact))] {
			buf := make([]byte, r.Len)
			if _, err := src.ReadAt(buf, r.Off); err != nil {
				return fail(err)
			}
			encs = append(encs, buf)
		}
		if err := w.put(encs); err != nil {
			return fail(err)
		}
	}
	if err := w.finish(sync); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmpPath, sealedPath); err != nil {
		return fail(&Error{Op: "seal segment", Path: sealedPath, Err: err})
	}
	return syncFolder()
}
