package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
)

// A sealed segment is the bbolt file followed by a trailer: a summary of
// the records and a CRC-32C of every byte of the bbolt file. A reader
// checks the CRC before it lets bbolt map the file, because bbolt trusts
// its file: a flipped byte in a branch page can send it out of bounds or
// around a cycle. With the CRC verified, the file is exactly what bbolt
// wrote and committed. The summary lets `spool status` and the appender's
// depth gauge read a segment's counts without opening bbolt.
//
// Trailer, little endian, at the end of the file. Format 2 (since spool
// identities; written by this build):
//
//	0  [8]byte magic "MSPOOLv2"
//	8  u64     length of the bbolt data before the trailer
//	16 u32     CRC-32C of that data
//	20 u32     reserved (0)
//	24 u64     record count
//	32 u64     first Seq
//	40 u64     last Seq
//	48 i64     oldest receive time (Unix ns)
//	56 i64     newest receive time (Unix ns)
//	64 [16]byte identity of the spool the segment was written in
//	80 u32     CRC-32C of bytes 0..79
//	84 u32     reserved (0)
//
// Format 1 (before identities; still read, its segments belong to the
// folder they are in) is the same without the identity: 72 bytes, magic
// "MSPOOLv1", the CRC of bytes 0..63 at 64.
const (
	trailerSize   = 88
	trailerV1Size = 72
)

var (
	trailerMagic   = [8]byte{'M', 'S', 'P', 'O', 'O', 'L', 'v', '2'}
	trailerV1Magic = [8]byte{'M', 'S', 'P', 'O', 'O', 'L', 'v', '1'}
)

// segmentSummary describes the records of a segment.
type segmentSummary struct {
	Records  uint64
	FirstSeq uint64
	LastSeq  uint64
	Oldest   int64 // receive time, Unix ns; 0 when there are no records
	Newest   int64
}

func (s *segmentSummary) add(seq uint64, at int64) {
	if s.Records == 0 {
		s.FirstSeq, s.Oldest, s.Newest = seq, at, at
	}
	s.Records++
	s.LastSeq = seq
	s.Oldest = min(s.Oldest, at)
	s.Newest = max(s.Newest, at)
}

func (s segmentSummary) OldestTime() time.Time { return unixNanoTime(s.Oldest) }
func (s segmentSummary) NewestTime() time.Time { return unixNanoTime(s.Newest) }

func unixNanoTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

type trailer struct {
	DataLen int64
	DataCRC uint32
	segmentSummary
	Spool   Identity // zero in a format 1 trailer
	Version int      // 1 or 2
}

func (t trailer) encode() []byte {
	b := make([]byte, trailerSize)
	le := binary.LittleEndian
	copy(b, trailerMagic[:])
	le.PutUint64(b[8:], uint64(t.DataLen))
	le.PutUint32(b[16:], t.DataCRC)
	le.PutUint64(b[24:], t.Records)
	le.PutUint64(b[32:], t.FirstSeq)
	le.PutUint64(b[40:], t.LastSeq)
	le.PutUint64(b[48:], uint64(t.Oldest))
	le.PutUint64(b[56:], uint64(t.Newest))
	copy(b[64:80], t.Spool[:])
	le.PutUint32(b[80:], crc32.Checksum(b[:80], castagnoli))
	return b
}

// readTrailer reads and checks the trailer of a file of the given size,
// format 2 or 1, without checking the data CRC. A file without a valid
// trailer (an unsealed, truncated or damaged segment) returns an error
// wrapping ErrCorrupt.
func readTrailer(f io.ReaderAt, size int64) (trailer, error) {
	if size < trailerV1Size {
		return trailer{}, fmt.Errorf("%w: %d bytes, too short for a sealed segment", ErrCorrupt, size)
	}
	n := min(size, trailerSize)
	b := make([]byte, n)
	if _, err := f.ReadAt(b, size-n); err != nil {
		return trailer{}, err
	}
	le := binary.LittleEndian
	var t trailer
	switch {
	case n == trailerSize && [8]byte(b[:8]) == trailerMagic:
		if le.Uint32(b[80:]) != crc32.Checksum(b[:80], castagnoli) {
			return trailer{}, fmt.Errorf("%w: segment trailer checksum does not match", ErrCorrupt)
		}
		t.Version, t.Spool = 2, Identity(b[64:80])
	case [8]byte(b[n-trailerV1Size:][:8]) == trailerV1Magic:
		b = b[n-trailerV1Size:]
		if le.Uint32(b[64:]) != crc32.Checksum(b[:64], castagnoli) {
			return trailer{}, fmt.Errorf("%w: segment trailer checksum does not match", ErrCorrupt)
		}
		t.Version = 1
	default:
		return trailer{}, fmt.Errorf("%w: no segment trailer at the end of the file (truncated, or never sealed)", ErrCorrupt)
	}
	t.DataLen, t.DataCRC = int64(le.Uint64(b[8:])), le.Uint32(b[16:])
	t.segmentSummary = segmentSummary{
		Records:  le.Uint64(b[24:]),
		FirstSeq: le.Uint64(b[32:]),
		LastSeq:  le.Uint64(b[40:]),
		Oldest:   int64(le.Uint64(b[48:])),
		Newest:   int64(le.Uint64(b[56:])),
	}
	if t.DataLen != size-int64(len(b)) {
		return trailer{}, fmt.Errorf("%w: trailer says %d bytes of data, the file has %d", ErrCorrupt, t.DataLen, size-int64(len(b)))
	}
	if t.Records > 0 && (t.FirstSeq > t.LastSeq || t.LastSeq-t.FirstSeq < t.Records-1) {
		return trailer{}, fmt.Errorf("%w: trailer says %d records from Seq %d to %d", ErrCorrupt, t.Records, t.FirstSeq, t.LastSeq)
	}
	return t, nil
}

// crcFile computes the CRC-32C of the first n bytes of f, streaming (the
// page cache holds the file; our memory does not grow with it).
func crcFile(f *os.File, n int64) (uint32, error) {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}

// verifySealed checks a sealed segment's trailer and data CRC.
func verifySealed(f *os.File) (trailer, error) {
	fi, err := f.Stat()
	if err != nil {
		return trailer{}, err
	}
	t, err := readTrailer(f, fi.Size())
	if err != nil {
		return trailer{}, err
	}
	sum, err := crcFile(f, t.DataLen)
	if err != nil {
		return trailer{}, err
	}
	if sum != t.DataCRC {
		// The trailer is returned: its summary and identity still hold.
		return t, fmt.Errorf("%w: segment data checksum %08x, the trailer says %08x (damaged after sealing)", ErrCorrupt, sum, t.DataCRC)
	}
	return t, nil
}

// appendTrailer computes the CRC of f's current content and appends the
// trailer, naming the spool the segment belongs to. The caller fdatasyncs.
func appendTrailer(f *os.File, sum segmentSummary, spool Identity) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	crc, err := crcFile(f, fi.Size())
	if err != nil {
		return err
	}
	_, err = f.WriteAt(trailer{DataLen: fi.Size(), DataCRC: crc, segmentSummary: sum, Spool: spool}.encode(), fi.Size())
	return err
}

// segmentTrailer reads the trailer of a sealed segment in dir.
func segmentTrailer(dir string, s segmentFile) (trailer, error) {
	f, err := openSpoolFile(filepath.Join(dir, s.Name), os.O_RDONLY, 0)
	if err != nil {
		return trailer{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return trailer{}, err
	}
	return readTrailer(f, fi.Size())
}
