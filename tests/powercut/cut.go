package powercut

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
)

// CutOptions choose what a Cut keeps of the changes not yet synced. The
// zero value keeps none of them: the strictest cut.
type CutOptions struct {
	// KeepPrefix keeps, for each file and each folder independently, a
	// random prefix of its changes since its last sync (writes and
	// truncates; entries made and removed), as a disk does that had
	// written part of its queue when the power went. Independent prefixes
	// cover every order the disk could have written in across files.
	KeepPrefix bool
	// TearLastPage writes the first change not kept, when it is a write
	// longer than a sector, in part: a random number of its leading
	// 512-byte sectors (at least one, never all), as a disk that lost power
	// in the middle of a page leaves it.
	TearLastPage bool
	// Seed seeds the random choices: the same seed and the same history
	// give the same result.
	Seed uint64
}

const sectorSize = 512

// cutCounts is what one Cut threw away and kept of the unsynced changes.
type cutCounts struct {
	discardedBytes, keptBytes uint64
	discardedChanges          uint64
	tornWrites                uint64
}

// materialize writes into dst (empty) what a machine would find after a
// power loss: the durable tree from root, plus what opts keep. It returns
// the ids of what it made, for the next scan to keep.
func (m *model) materialize(dst string, opts CutOptions) (cutCounts, *survivors, error) {
	c := &cutter{opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, 0x9E3779B97F4A7C15)),
		madeFile: map[*object]string{}, madeDir: map[*object]bool{},
		root: dst, kept: &survivors{ids: map[string]uint64{".": m.root.id}, nextID: m.nextID}}
	c.madeDir[m.root] = true
	err := c.dir(m.root, dst)
	return c.counts, c.kept, err
}

type cutter struct {
	opts     CutOptions
	rng      *rand.Rand
	madeFile map[*object]string // file object → the path it was written at
	madeDir  map[*object]bool
	counts   cutCounts
	root     string     // dst of materialize
	kept     *survivors // the id of each path made
}

// made records that path holds o.
func (c *cutter) made(o *object, path string) {
	if rel, err := filepath.Rel(c.root, path); err == nil {
		c.kept.ids[rel] = o.id
	}
}

// keep is how many of n unsynced changes survive.
func (c *cutter) keep(n int) int {
	if !c.opts.KeepPrefix || n == 0 {
		return 0
	}
	return c.rng.IntN(n + 1)
}

func (c *cutter) dir(o *object, path string) error {
	entries := make(map[string]*object, len(o.durableDir))
	for name, child := range o.durableDir {
		entries[name] = child
	}
	k := c.keep(len(o.dirChanges))
	for _, ch := range o.dirChanges[:k] {
		for _, e := range ch {
			e.apply(entries)
		}
	}
	c.counts.discardedChanges += uint64(len(o.dirChanges) - k)

	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		child, p := entries[name], filepath.Join(path, name)
		c.made(child, p)
		switch child.kind {
		case kindDir:
			// Renames synced on one side only can reach a folder twice,
			// even from inside itself; a folder has one place, the first.
			if c.madeDir[child] {
				continue
			}
			c.madeDir[child] = true
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			if err := c.dir(child, p); err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(child.durableMode)); err != nil {
				return err
			}
		case kindSymlink:
			if err := os.Symlink(child.target, p); err != nil {
				return err
			}
		case kindFile:
			if first, ok := c.madeFile[child]; ok {
				if err := os.Link(first, p); err != nil {
					return err
				}
				continue
			}
			c.madeFile[child] = p
			if err := c.file(child, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *cutter) file(o *object, path string) error {
	k := c.keep(len(o.changes))
	b, err := o.contentWith(k)
	if err != nil {
		return err
	}
	for i, ch := range o.changes[k:] {
		if ch.truncate {
			c.counts.discardedChanges++
			continue
		}
		n := len(ch.data)
		if i == 0 && c.opts.TearLastPage {
			if torn := c.tear(ch); torn > 0 {
				b = fileChange{off: ch.off, data: ch.data[:torn]}.applyTo(b)
				c.counts.tornWrites++
				c.counts.keptBytes += uint64(torn)
				n -= torn
			}
		}
		c.counts.discardedBytes += uint64(n)
	}
	for _, ch := range o.changes[:k] {
		c.counts.keptBytes += uint64(len(ch.data))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	return os.Chmod(path, os.FileMode(o.durableMode))
}

// tear returns how many leading bytes of a write reach the disk: up to a
// sector boundary of the file inside it, so at least one sector and never
// all; 0 when the write does not cross a sector boundary (a sector is
// written whole or not at all).
func (c *cutter) tear(ch fileChange) int {
	first := (ch.off/sectorSize + 1) * sectorSize // first boundary after the start
	end := ch.off + int64(len(ch.data))
	if first >= end {
		return 0
	}
	boundaries := (end-1-first)/sectorSize + 1 // boundaries strictly inside
	return int(first + int64(c.rng.IntN(int(boundaries)))*sectorSize - ch.off)
}

// clearDir removes everything in dir, leaving dir itself.
func clearDir(dir string) error {
	names, err := readNames(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return fmt.Errorf("powercut: clear %s: %w", dir, err)
		}
	}
	return nil
}
