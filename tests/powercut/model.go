package powercut

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
)

// The model: every file, folder and symlink of the mount is an object with
// an id of its own (its inode number on the mount, never reused, unlike the
// lower file system's, and kept across a Cut as a disk keeps its inodes),
// holding its durable state and the changes made since its last sync. The invariant, checked by verify: the durable state with the
// changes applied is what the lower folder holds now.

type kind uint8

const (
	kindFile kind = iota
	kindDir
	kindSymlink
)

type object struct {
	id          uint64
	kind        kind
	mode        uint32 // permission bits now
	durableMode uint32 // permission bits at the last sync (or the creation)

	// Files: the durable content is the file durable names in the store
	// ("" when never synced: empty), changes the writes and truncates since.
	durable string
	changes []fileChange

	// Folders: the entries now, at the last fsync, and the changes since.
	live       map[string]*object
	durableDir map[string]*object
	dirChanges []entryChange

	target string // symlinks
}

// fileChange is a write of data at off, or (truncate) a new size off.
type fileChange struct {
	truncate bool
	off      int64
	data     []byte
}

// entryChange is one change of a folder's entries, made whole or not at
// all: one entry made or removed, or the two of a rename within the
// folder (rename(2) is atomic, so a cut leaves the old name or the new).
type entryChange []entrySet

// entrySet sets name to obj, or removes name when obj is nil.
type entrySet struct {
	name string
	obj  *object
}

// model is one mount's objects. It is guarded by its generation's lock.
type model struct {
	store  string // folder of durable copies, one file per object id
	nextID uint64
	root   *object
}

func (m *model) newObject(k kind, mode uint32) *object {
	m.nextID++
	o := &object{id: m.nextID, kind: k, mode: mode & 0o7777, durableMode: mode & 0o7777}
	if k == kindDir {
		o.live, o.durableDir = map[string]*object{}, map[string]*object{}
	}
	return o
}

// setEntries records one change of a folder's entries.
func (o *object) setEntries(sets ...entrySet) {
	for _, e := range sets {
		e.apply(o.live)
	}
	o.dirChanges = append(o.dirChanges, entryChange(sets))
}

func (o *object) setEntry(name string, child *object) {
	o.setEntries(entrySet{name: name, obj: child})
}

func (e entrySet) apply(entries map[string]*object) {
	if e.obj == nil {
		delete(entries, e.name)
	} else {
		entries[e.name] = e.obj
	}
}

func (o *object) write(data []byte, off int64) {
	o.changes = append(o.changes, fileChange{off: off, data: bytes.Clone(data)})
}

func (o *object) truncate(size int64) {
	o.changes = append(o.changes, fileChange{truncate: true, off: size})
}

// syncFile makes o's content durable: its changes are applied to its copy
// in the store.
func (m *model) syncFile(o *object) error {
	o.durableMode = o.mode
	if len(o.changes) == 0 {
		return nil
	}
	if o.durable == "" {
		o.durable = filepath.Join(m.store, strconv.FormatUint(o.id, 10))
	}
	f, err := os.OpenFile(o.durable, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	for _, c := range o.changes {
		if err = c.apply(f); err != nil {
			break
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("powercut: sync object %d: %w", o.id, err)
	}
	o.changes = nil
	return nil
}

// syncDir makes o's entries durable.
func (o *object) syncDir() {
	o.durableMode = o.mode
	o.durableDir = make(map[string]*object, len(o.live))
	for name, c := range o.live {
		o.durableDir[name] = c
	}
	o.dirChanges = nil
}

func (c fileChange) apply(f *os.File) error {
	if c.truncate {
		return f.Truncate(c.off)
	}
	_, err := f.WriteAt(c.data, c.off)
	return err
}

// survivors is what a Cut wrote back: the object id of each path it made
// (relative to the mount, "." the root), and the next id the model would
// have issued, so the scan after it keeps the inode numbers a program saw
// before the cut — a real disk does not renumber its files, and the spool
// tells a copied folder from its original by the folder's inode.
type survivors struct {
	ids    map[string]uint64
	nextID uint64
}

// scan builds the model of a folder as it is now, all of it durable: a
// Mount starts from what is on disk. Hard links become one object. Paths in
// kept (nil at the first mount) keep their ids.
func scan(lower, store string, kept *survivors) (*model, error) {
	m := &model{store: store}
	if kept != nil {
		m.nextID = kept.nextID
	}
	// keepID gives o the id its path had before the cut, if it had one.
	keepID := func(o *object, path string) {
		if kept == nil {
			return
		}
		rel, err := filepath.Rel(lower, path)
		if err != nil {
			return
		}
		if id, ok := kept.ids[rel]; ok {
			o.id = id
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(lower, &st); err != nil {
		return nil, err
	}
	m.root = m.newObject(kindDir, st.Mode)
	keepID(m.root, lower)
	byIno := map[uint64]*object{}
	var walk func(dir *object, path string) error
	walk = func(dir *object, path string) error {
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range entries {
			p := filepath.Join(path, e.Name())
			if err := syscall.Lstat(p, &st); err != nil {
				return err
			}
			var o *object
			switch st.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				o = m.newObject(kindDir, st.Mode)
				keepID(o, p)
				if err := walk(o, p); err != nil {
					return err
				}
			case syscall.S_IFREG:
				if o = byIno[st.Ino]; o == nil {
					o = m.newObject(kindFile, st.Mode)
					keepID(o, p)
					byIno[st.Ino] = o
					o.durable = filepath.Join(store, strconv.FormatUint(o.id, 10))
					if err := copyFile(p, o.durable); err != nil {
						return err
					}
				}
			case syscall.S_IFLNK:
				o = m.newObject(kindSymlink, st.Mode)
				keepID(o, p)
				if o.target, err = os.Readlink(p); err != nil {
					return err
				}
			default:
				return fmt.Errorf("powercut: %s: a %s, which the power-cut file system does not model", p, e.Type())
			}
			dir.live[e.Name()] = o
		}
		dir.syncDir()
		return nil
	}
	if err := walk(m.root, lower); err != nil {
		return nil, err
	}
	return m, nil
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// verify checks the model's invariant against the lower folder: every file
// reachable now holds its durable content with its changes applied, and
// every folder holds exactly its entries.
func (m *model) verify(lower string) error {
	seen := map[*object]bool{}
	var walk func(dir *object, path string) error
	walk = func(dir *object, path string) error {
		names, err := readNames(path)
		if err != nil {
			return err
		}
		if len(names) != len(dir.live) {
			return fmt.Errorf("powercut: model out of step: %s holds %v, the model %v", path, names, sortedNames(dir.live))
		}
		for _, name := range names {
			o := dir.live[name]
			p := filepath.Join(path, name)
			if o == nil {
				return fmt.Errorf("powercut: model out of step: %s is not in the model", p)
			}
			switch o.kind {
			case kindDir:
				if err := walk(o, p); err != nil {
					return err
				}
			case kindFile:
				if seen[o] {
					continue
				}
				seen[o] = true
				want, err := o.contentWith(len(o.changes))
				if err != nil {
					return err
				}
				got, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, want) {
					return fmt.Errorf("powercut: model out of step: %s holds %d bytes that differ from the %d the model expects", p, len(got), len(want))
				}
			}
		}
		return nil
	}
	return walk(m.root, lower)
}

// contentWith returns o's durable content with its first n changes applied.
func (o *object) contentWith(n int) ([]byte, error) {
	var b []byte
	if o.durable != "" {
		var err error
		if b, err = os.ReadFile(o.durable); err != nil {
			return nil, err
		}
	}
	for _, c := range o.changes[:n] {
		b = c.applyTo(b)
	}
	return b, nil
}

func (c fileChange) applyTo(b []byte) []byte {
	end := c.off
	if !c.truncate {
		end += int64(len(c.data))
	}
	if c.truncate && end < int64(len(b)) {
		return b[:end]
	}
	if end > int64(len(b)) {
		b = append(b, make([]byte, end-int64(len(b)))...)
	}
	copy(b[c.off:], c.data)
	return b
}

func readNames(path string) ([]string, error) {
	d, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

func sortedNames(m map[string]*object) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
