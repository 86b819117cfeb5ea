package powercut

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// generation is one mount: its model and the lock every operation takes.
// A Cut marks it dead, and from then on every operation on it fails with
// EIO, so a process that outlived the cut never reaches the folder again.
type generation struct {
	lower  string
	mu     sync.RWMutex // guards m and the lower folder; readers of both take it shared
	m      *model
	dead   atomic.Bool // set with mu held
	open   atomic.Int64
	counts *counters
}

// lock takes the generation's lock for a change; false (and no lock) once
// the generation is dead.
func (g *generation) lock() bool {
	g.mu.Lock()
	if g.dead.Load() {
		g.mu.Unlock()
		return false
	}
	return true
}

func (g *generation) rlock() bool {
	g.mu.RLock()
	if g.dead.Load() {
		g.mu.RUnlock()
		return false
	}
	return true
}

// node is a file, folder or symlink of the mount. Its lower path is where
// go-fuse's tree puts it; its identity is its object.
type node struct {
	fusefs.Inode
	g   *generation
	obj *object
}

var (
	_ fusefs.NodeLookuper   = (*node)(nil)
	_ fusefs.NodeGetattrer  = (*node)(nil)
	_ fusefs.NodeSetattrer  = (*node)(nil)
	_ fusefs.NodeOpener     = (*node)(nil)
	_ fusefs.NodeCreater    = (*node)(nil)
	_ fusefs.NodeMkdirer    = (*node)(nil)
	_ fusefs.NodeMknoder    = (*node)(nil)
	_ fusefs.NodeUnlinker   = (*node)(nil)
	_ fusefs.NodeRmdirer    = (*node)(nil)
	_ fusefs.NodeRenamer    = (*node)(nil)
	_ fusefs.NodeLinker     = (*node)(nil)
	_ fusefs.NodeSymlinker  = (*node)(nil)
	_ fusefs.NodeReadlinker = (*node)(nil)
	_ fusefs.NodeReaddirer  = (*node)(nil)
	_ fusefs.NodeFsyncer    = (*node)(nil)
	_ fusefs.NodeStatfser   = (*node)(nil)
)

func (n *node) path() string { return filepath.Join(n.g.lower, n.Path(nil)) }

func (n *node) childPath(name string) string { return filepath.Join(n.path(), name) }

// child returns the go-fuse inode for o, found at name in n.
func (n *node) child(ctx context.Context, o *object, st *syscall.Stat_t, attr *fuse.Attr) *fusefs.Inode {
	attr.FromStat(st)
	attr.Ino = o.id
	return n.NewInode(ctx, &node{g: n.g, obj: o}, fusefs.StableAttr{Mode: st.Mode & syscall.S_IFMT, Ino: o.id})
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.g.rlock() {
		return nil, syscall.EIO
	}
	defer n.g.mu.RUnlock()
	o := n.obj.live[name]
	if o == nil {
		return nil, syscall.ENOENT
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(n.childPath(name), &st); err != nil {
		return nil, fusefs.ToErrno(err)
	}
	return n.child(ctx, o, &st, &out.Attr), 0
}

func (n *node) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if !n.g.rlock() {
		return syscall.EIO
	}
	defer n.g.mu.RUnlock()
	var st syscall.Stat_t
	var err error
	if h, ok := f.(*handle); ok {
		err = syscall.Fstat(int(h.f.Fd()), &st)
	} else {
		err = syscall.Lstat(n.path(), &st)
	}
	if err != nil {
		return fusefs.ToErrno(err)
	}
	out.FromStat(&st)
	out.Ino = n.obj.id
	return 0
}

// Setattr changes mode, owner, size and times. A size change is a change of
// the content, undone by a Cut unless synced; mode is durable with the
// object's next sync; owner and times are not modelled.
func (n *node) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if !n.g.lock() {
		return syscall.EIO
	}
	defer n.g.mu.Unlock()
	// Through the open file when there is one: it may have no name left.
	p, nofollow := n.path(), unix.AT_SYMLINK_NOFOLLOW
	if h, ok := f.(*handle); ok {
		p, nofollow = "/proc/self/fd/"+strconv.Itoa(int(h.f.Fd())), 0
	}
	if m, ok := in.GetMode(); ok {
		if err := syscall.Chmod(p, m); err != nil {
			return fusefs.ToErrno(err)
		}
		n.obj.mode = m & 0o7777
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if err := unix.Fchownat(unix.AT_FDCWD, p, u, g, nofollow); err != nil {
			return fusefs.ToErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		if n.obj.kind != kindFile {
			return syscall.EISDIR
		}
		if err := syscall.Truncate(p, int64(sz)); err != nil {
			return fusefs.ToErrno(err)
		}
		n.obj.truncate(int64(sz))
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, nofollow); err != nil {
			return fusefs.ToErrno(err)
		}
	}
	var st syscall.Stat_t
	stat := syscall.Stat
	if nofollow != 0 {
		stat = syscall.Lstat
	}
	if err := stat(p, &st); err != nil {
		return fusefs.ToErrno(err)
	}
	out.FromStat(&st)
	out.Ino = n.obj.id
	return 0
}

// openFlags are the flags the daemon opens the lower file with: offsets
// come with every write (so no O_APPEND, which would ignore them), syncs
// are the model's business (so no O_SYNC), and the buffers are not aligned
// (so no O_DIRECT).
func openFlags(flags uint32) int {
	return int(flags)&^(syscall.O_APPEND|syscall.O_CREAT|syscall.O_EXCL|syscall.O_SYNC|syscall.O_DSYNC|syscall.O_DIRECT|fuse.FMODE_EXEC) |
		syscall.O_NOFOLLOW | syscall.O_CLOEXEC
}

// syncFlags reports whether writes through a file opened with flags are
// synced as they are made.
func syncFlags(flags uint32) bool {
	return int(flags)&(syscall.O_SYNC|syscall.O_DSYNC) != 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if !n.g.lock() {
		return nil, 0, syscall.EIO
	}
	defer n.g.mu.Unlock()
	if n.obj.kind != kindFile {
		return nil, 0, syscall.EINVAL
	}
	f, err := os.OpenFile(n.path(), openFlags(flags), 0)
	if err != nil {
		return nil, 0, fusefs.ToErrno(err)
	}
	if flags&syscall.O_TRUNC != 0 {
		// The kernel truncates through Setattr unless asked otherwise; in
		// case it ever sends O_TRUNC here, it is a change like any other.
		n.obj.truncate(0)
	}
	return n.g.newHandle(f, n.obj, flags), 0, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	if !n.g.lock() {
		return nil, nil, 0, syscall.EIO
	}
	defer n.g.mu.Unlock()
	if n.obj.live[name] != nil {
		// The kernel sends CREATE for names it believes missing.
		return nil, nil, 0, syscall.EEXIST
	}
	p := n.childPath(name)
	f, err := os.OpenFile(p, openFlags(flags)|syscall.O_CREAT|syscall.O_EXCL, os.FileMode(mode&0o777))
	if err != nil {
		return nil, nil, 0, fusefs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		syscall.Unlink(p)
		return nil, nil, 0, fusefs.ToErrno(err)
	}
	o := n.g.m.newObject(kindFile, st.Mode)
	n.obj.setEntry(name, o)
	return n.child(ctx, o, &st, &out.Attr), n.g.newHandle(f, o, flags), 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.g.lock() {
		return nil, syscall.EIO
	}
	defer n.g.mu.Unlock()
	if err := os.Mkdir(n.childPath(name), os.FileMode(mode&0o777)); err != nil {
		return nil, fusefs.ToErrno(err)
	}
	ino, _, errno := n.add(ctx, name, kindDir, syscall.Rmdir, out)
	return ino, errno
}

// add models what was just made at name in n's lower folder: a new object,
// a change of n's entries, an inode. undo removes the lower entry when it
// cannot even be looked at.
func (n *node) add(ctx context.Context, name string, k kind, undo func(string) error, out *fuse.EntryOut) (*fusefs.Inode, *object, syscall.Errno) {
	p := n.childPath(name)
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		undo(p)
		return nil, nil, fusefs.ToErrno(err)
	}
	o := n.g.m.newObject(k, st.Mode)
	n.obj.setEntry(name, o)
	return n.child(ctx, o, &st, &out.Attr), o, 0
}

// Mknod is refused: device nodes and FIFOs are not modelled (regular files
// come through Create).
func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EOPNOTSUPP
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.g.lock() {
		return nil, syscall.EIO
	}
	defer n.g.mu.Unlock()
	if err := syscall.Symlink(target, n.childPath(name)); err != nil {
		return nil, fusefs.ToErrno(err)
	}
	ino, o, errno := n.add(ctx, name, kindSymlink, syscall.Unlink, out)
	if o != nil {
		o.target = target
	}
	return ino, errno
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.obj.kind != kindSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(n.obj.target), 0
}

func (n *node) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok || t.g != n.g {
		return nil, syscall.EXDEV
	}
	if !n.g.lock() {
		return nil, syscall.EIO
	}
	defer n.g.mu.Unlock()
	if _, parent := t.Parent(); parent == nil {
		return nil, syscall.ENOENT // no name left to link from
	}
	p := n.childPath(name)
	if err := syscall.Link(t.path(), p); err != nil {
		return nil, fusefs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, fusefs.ToErrno(err)
	}
	n.obj.setEntry(name, t.obj)
	return n.child(ctx, t.obj, &st, &out.Attr), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, syscall.Unlink)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, syscall.Rmdir)
}

func (n *node) remove(name string, rm func(string) error) syscall.Errno {
	if !n.g.lock() {
		return syscall.EIO
	}
	defer n.g.mu.Unlock()
	if err := rm(n.childPath(name)); err != nil {
		return fusefs.ToErrno(err)
	}
	n.obj.setEntry(name, nil)
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.g != n.g {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL // RENAME_WHITEOUT is for overlay file systems
	}
	if !n.g.lock() {
		return syscall.EIO
	}
	defer n.g.mu.Unlock()
	src, dst := n.obj.live[name], np.obj.live[newName]
	if err := unix.Renameat2(unix.AT_FDCWD, n.childPath(name), unix.AT_FDCWD, np.childPath(newName), uint(flags)); err != nil {
		return fusefs.ToErrno(err)
	}
	// Within one folder a rename is one change; between two, one in each,
	// each durable with its own folder's fsync.
	from, to := entrySet{name: name}, entrySet{name: newName, obj: src}
	if flags&unix.RENAME_EXCHANGE != 0 {
		from.obj = dst
	}
	switch {
	case src == dst && flags&unix.RENAME_EXCHANGE == 0:
		// Two names of one file: rename(2) does nothing.
	case n.obj == np.obj:
		n.obj.setEntries(from, to)
	default:
		n.obj.setEntries(from)
		np.obj.setEntries(to)
	}
	return 0
}

func (n *node) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	if !n.g.rlock() {
		return nil, syscall.EIO
	}
	defer n.g.mu.RUnlock()
	names := sortedNames(n.obj.live)
	list := make([]fuse.DirEntry, 0, len(names))
	for _, name := range names {
		o := n.obj.live[name]
		mode := uint32(syscall.S_IFREG)
		switch o.kind {
		case kindDir:
			mode = syscall.S_IFDIR
		case kindSymlink:
			mode = syscall.S_IFLNK
		}
		list = append(list, fuse.DirEntry{Name: name, Mode: mode, Ino: o.id})
	}
	return fusefs.NewListDirStream(list), 0
}

// Fsync serves fsync and fdatasync of files and of folders alike: it makes
// the object's content (a file) or entries (a folder) durable.
func (n *node) Fsync(ctx context.Context, f fusefs.FileHandle, flags uint32) syscall.Errno {
	if !n.g.lock() {
		return syscall.EIO
	}
	defer n.g.mu.Unlock()
	return n.g.sync(n.obj)
}

func (g *generation) sync(o *object) syscall.Errno {
	switch o.kind {
	case kindDir:
		o.syncDir()
		g.counts.dirSyncs.Add(1)
	case kindFile:
		if err := g.m.syncFile(o); err != nil {
			return syscall.EIO
		}
		g.counts.fileSyncs.Add(1)
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	if err := syscall.Statfs(n.g.lower, &s); err != nil {
		return fusefs.ToErrno(err)
	}
	out.FromStatfsT(&s)
	return 0
}

// handle is an open file: the lower file and the object it writes to.
type handle struct {
	g    *generation
	obj  *object
	f    *os.File
	sync bool // opened O_SYNC or O_DSYNC
}

var (
	_ fusefs.FileReader    = (*handle)(nil)
	_ fusefs.FileWriter    = (*handle)(nil)
	_ fusefs.FileReleaser  = (*handle)(nil)
	_ fusefs.FileAllocater = (*handle)(nil)
)

func (g *generation) newHandle(f *os.File, o *object, flags uint32) *handle {
	g.open.Add(1)
	return &handle{g: g, obj: o, f: f, sync: syncFlags(flags)}
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if !h.g.rlock() {
		return nil, syscall.EIO
	}
	defer h.g.mu.RUnlock()
	n, err := h.f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, fusefs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) size() int64 {
	fi, err := h.f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if !h.g.lock() {
		return 0, syscall.EIO
	}
	defer h.g.mu.Unlock()
	n, err := h.f.WriteAt(data, off)
	if n > 0 {
		h.obj.write(data[:n], off)
		h.g.counts.writtenBytes.Add(uint64(n))
	}
	if err != nil && n == 0 {
		return 0, fusefs.ToErrno(err)
	}
	if h.sync {
		if errno := h.g.sync(h.obj); errno != 0 {
			return 0, errno
		}
	}
	return uint32(n), 0
}

// Allocate serves fallocate. Allocating space is no change of content
// except for the size it may add; punching a hole or zeroing a range is a
// write of zeros, and is done as one so that the model and the lower file
// agree byte for byte.
func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if !h.g.lock() {
		return syscall.EIO
	}
	defer h.g.mu.Unlock()
	cur := h.size()
	end := int64(off + size)
	switch mode {
	case 0, unix.FALLOC_FL_KEEP_SIZE:
		if err := unix.Fallocate(int(h.f.Fd()), mode, int64(off), int64(size)); err != nil {
			return fusefs.ToErrno(err)
		}
		if mode == 0 && end > cur {
			h.obj.truncate(end)
		}
		return 0
	case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE:
		end = min(end, cur)
	case unix.FALLOC_FL_ZERO_RANGE:
	default:
		return syscall.EOPNOTSUPP
	}
	if end <= int64(off) {
		return 0
	}
	zeros := make([]byte, end-int64(off))
	if _, err := h.f.WriteAt(zeros, int64(off)); err != nil {
		return fusefs.ToErrno(err)
	}
	h.obj.write(zeros, int64(off))
	return 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.g.open.Add(-1)
	return fusefs.ToErrno(h.f.Close())
}
