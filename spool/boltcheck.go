package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"runtime/debug"
)

// bbolt trusts its file: it maps it and follows page ids and element
// offsets without bounds checks. A segment whose data CRC verifies is what
// some program wrote and sealed, but not necessarily a consistent bbolt
// file (hand-made, foreign, or written by a bug), and an inconsistent one
// made bbolt fault on the mapping (SIGSEGV, or SIGBUS past the file's end)
// and kill the writer at every restart. So before bbolt opens a sealed
// segment, checkBoltFile walks what bbolt will walk, with bounds checks:
// the meta page bbolt will choose, and every page reachable from its root
// bucket. What passes can be read by bbolt without leaving the file.
// Reading through bbolt still runs under guardBolt, which turns a fault or
// a panic inside bbolt into an error, as the last line of defense.
//
// bbolt's on-disk format, version 2, as read here: page header id u64,
// flags u16, count u16, overflow u32; meta (after the header): magic u32,
// version u32, page size u32, flags u32, root bucket (root u64, sequence
// u64), freelist u64, high-water pgid u64, txid u64, checksum u64 (FNV-1a
// of the 56 bytes before it); branch element: pos u32, ksize u32, pgid u64.
const (
	branchPageFlag      = 0x01
	metaPageFlag        = 0x04
	boltVersion         = 2
	metaSize            = 64
	branchElementSize   = 16
	maxBoltTreeDepth    = 64
	minBoltPageSize     = 512
	maxBoltPageSize     = 1 << 16
	errBoltInconsistent = "bbolt structure"
)

type boltMeta struct {
	pageSize uint32
	root     uint64
	pgid     uint64 // high-water mark: pages [0, pgid) are in use
	txid     uint64
}

func parseMeta(b []byte) (boltMeta, error) {
	le := binary.LittleEndian
	if len(b) < pageHeaderSize+metaSize {
		return boltMeta{}, errors.New("meta page cut short")
	}
	if le.Uint16(b[8:])&metaPageFlag == 0 {
		return boltMeta{}, errors.New("not a meta page")
	}
	m := b[pageHeaderSize : pageHeaderSize+metaSize]
	if le.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, errors.New("no bbolt magic")
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt version %d", v)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return boltMeta{}, errors.New("meta checksum does not match")
	}
	return boltMeta{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, nil
}

// checkBoltFile checks the bbolt file in the first dataLen bytes of f as
// described above. An inconsistency returns an error wrapping ErrCorrupt.
func checkBoltFile(f io.ReaderAt, dataLen int64) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, errBoltInconsistent, fmt.Sprintf(format, a...))
	}
	// bbolt takes the page size from meta 0, or else from a meta 1 found
	// at one of the possible page sizes, then reads both metas at page 0
	// and page 1 of that size and chooses between them by txid.
	hdr := make([]byte, pageHeaderSize+metaSize)
	readMeta := func(off int64) (boltMeta, error) {
		if off+int64(len(hdr)) > dataLen {
			return boltMeta{}, errors.New("file too short for a meta page")
		}
		if _, err := f.ReadAt(hdr, off); err != nil {
			return boltMeta{}, err
		}
		return parseMeta(hdr)
	}
	ps := int64(0)
	if m, err := readMeta(0); err == nil {
		ps = int64(m.pageSize)
	} else {
		for try := int64(minBoltPageSize); try <= maxBoltPageSize && ps == 0; try *= 2 {
			if m, err := readMeta(try); err == nil && int64(m.pageSize) == try {
				ps = try
			}
		}
	}
	if ps < minBoltPageSize || ps > maxBoltPageSize || ps&(ps-1) != 0 {
		return fail("no valid meta page, or page size %d", ps)
	}
	var metas [2]boltMeta
	var merr [2]error
	metas[0], merr[0] = readMeta(0)
	metas[1], merr[1] = readMeta(ps)
	if merr[0] != nil && merr[1] != nil {
		return fail("no valid meta page (%v; %v)", merr[0], merr[1])
	}
	a, b, aerr, berr := metas[0], metas[1], merr[0], merr[1]
	if b.txid > a.txid {
		a, b, aerr, berr = b, a, berr, aerr
	}
	m := a
	if aerr != nil {
		m = b
	}
	if int64(m.pageSize) != ps {
		return fail("the meta pages disagree on the page size (%d, %d)", ps, m.pageSize)
	}
	if m.pgid < 3 || m.pgid > uint64(dataLen/ps) {
		return fail("high-water page %d, the file holds %d pages", m.pgid, dataLen/ps)
	}
	w := treeWalk{f: f, ps: ps, pgid: m.pgid, seen: map[uint64]bool{}}
	if err := w.page(m.root, 0); err != nil {
		return fail("%v", err)
	}
	return nil
}

// treeWalk checks the pages reachable from a root.
type treeWalk struct {
	f    io.ReaderAt
	ps   int64
	pgid uint64
	seen map[uint64]bool
}

func (w *treeWalk) page(id uint64, depth int) error {
	if depth > maxBoltTreeDepth {
		return fmt.Errorf("tree deeper than %d", maxBoltTreeDepth)
	}
	if id < 2 || id >= w.pgid {
		return fmt.Errorf("page id %d outside the pages in use [2, %d)", id, w.pgid)
	}
	if w.seen[id] {
		return fmt.Errorf("page %d reached twice (a cycle or a shared page)", id)
	}
	w.seen[id] = true
	hdr := make([]byte, pageHeaderSize)
	if _, err := w.f.ReadAt(hdr, int64(id)*w.ps); err != nil {
		return err
	}
	le := binary.LittleEndian
	overflow := uint64(le.Uint32(hdr[12:]))
	if le.Uint64(hdr) != id {
		return fmt.Errorf("page %d says it is page %d", id, le.Uint64(hdr))
	}
	if id+overflow >= w.pgid {
		return fmt.Errorf("page %d with %d overflow pages runs past the pages in use (%d)", id, overflow, w.pgid)
	}
	buf := make([]byte, int64(overflow+1)*w.ps)
	if _, err := w.f.ReadAt(buf, int64(id)*w.ps); err != nil {
		return err
	}
	for o := uint64(1); o <= overflow; o++ {
		w.seen[id+o] = true
	}
	return w.node(buf, id, depth)
}

// node checks a branch or leaf page held in p (a page's span, or the
// inline page inside a bucket value).
func (w *treeWalk) node(p []byte, id uint64, depth int) error {
	le := binary.LittleEndian
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	switch {
	case flags&branchPageFlag != 0:
		if count == 0 {
			return fmt.Errorf("branch page %d has no elements", id)
		}
		if pageHeaderSize+count*branchElementSize > len(p) {
			return fmt.Errorf("branch page %d: %d elements do not fit", id, count)
		}
		for e := range count {
			eo := pageHeaderSize + e*branchElementSize
			pos, ksize := uint64(le.Uint32(p[eo:])), uint64(le.Uint32(p[eo+4:]))
			if uint64(eo)+pos+ksize > uint64(len(p)) {
				return fmt.Errorf("branch page %d: element %d points outside the page", id, e)
			}
			if err := w.page(le.Uint64(p[eo+8:]), depth+1); err != nil {
				return err
			}
		}
	case flags&leafPageFlag != 0:
		if pageHeaderSize+count*leafElementSize > len(p) {
			return fmt.Errorf("leaf page %d: %d elements do not fit", id, count)
		}
		for e := range count {
			eo := pageHeaderSize + e*leafElementSize
			eflags := le.Uint32(p[eo:])
			pos, ksize, vsize := uint64(le.Uint32(p[eo+4:])), uint64(le.Uint32(p[eo+8:])), uint64(le.Uint32(p[eo+12:]))
			vs := uint64(eo) + pos + ksize
			if vs+vsize > uint64(len(p)) {
				return fmt.Errorf("leaf page %d: element %d points outside the page", id, e)
			}
			if eflags&bucketLeafFlag == 0 {
				continue
			}
			v := p[vs : vs+vsize]
			if len(v) < bucketHeaderSize {
				return fmt.Errorf("leaf page %d: bucket value of %d bytes", id, len(v))
			}
			if root := le.Uint64(v); root != 0 {
				if err := w.page(root, depth+1); err != nil {
					return err
				}
				continue
			}
			inline := v[bucketHeaderSize:]
			if len(inline) < pageHeaderSize || le.Uint16(inline[8:])&leafPageFlag == 0 {
				return fmt.Errorf("leaf page %d: inline bucket without a leaf page", id)
			}
			if depth+1 > maxBoltTreeDepth {
				return fmt.Errorf("tree deeper than %d", maxBoltTreeDepth)
			}
			if err := w.node(inline, id, depth+1); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("page %d is neither a branch nor a leaf (flags %#x)", id, flags)
	}
	return nil
}

// guardBolt runs fn, which reads a mapped segment through bbolt, and turns
// a memory fault on the mapping or a panic inside bbolt into an error
// wrapping ErrCorrupt. A fault is a panic only with SetPanicOnFault, which
// holds for the calling goroutine alone, so it is set around fn.
func guardBolt(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: bbolt failed reading the segment: %v", ErrCorrupt, p)
		}
	}()
	fn()
	return nil
}
