package powercut

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The FUSE server runs in a process of its own, the test binary started
// again with daemonEnv set: a process that serves a FUSE mount must never
// touch that mount itself. A page fault on a mapping of a FUSE file (bbolt
// and SQLite both map their files) blocks its thread in the kernel until
// the server answers, and Go's garbage collector, which must stop every
// thread, cannot stop that one: the server's goroutines stay stopped, the
// fault is never answered, and the process hangs for good.
const (
	daemonEnv      = "POWERCUT_DAEMON" // the lower folder: run as the daemon
	daemonMntEnv   = "POWERCUT_DAEMON_MNT"
	daemonStoreEnv = "POWERCUT_DAEMON_STORE"
)

func init() {
	if lower := os.Getenv(daemonEnv); lower != "" {
		os.Exit(runDaemon(lower, os.Getenv(daemonMntEnv), os.Getenv(daemonStoreEnv)))
	}
}

// request and reply are the control protocol, one JSON value per line:
// the client writes requests to the daemon's stdin, the daemon answers
// each on its stdout. The first reply says whether the mount is up.
type request struct {
	Op   string // "cut", "verify", "stats", "close"
	Opts CutOptions
}

type reply struct {
	Err   string
	Stats Stats
}

func runDaemon(lower, mnt, store string) int {
	out := json.NewEncoder(os.Stdout)
	os.Stdout = os.Stderr // nothing else may write on the control pipe
	d := &daemon{lower: lower, mnt: mnt, store: store}
	if err := d.mount(nil); err != nil {
		out.Encode(reply{Err: err.Error()})
		return 1
	}
	out.Encode(reply{Stats: d.stats()})
	in := json.NewDecoder(os.Stdin)
	for {
		var req request
		err := in.Decode(&req)
		if err != nil {
			// The test is gone: leave everything, as a clean shutdown would.
			d.close()
			if errors.Is(err, io.EOF) {
				return 0
			}
			return 1
		}
		switch req.Op {
		case "cut":
			err = d.cut(req.Opts)
		case "verify":
			err = d.verify()
		case "stats":
		case "close":
			err = d.close()
		default:
			err = fmt.Errorf("powercut: unknown request %q", req.Op)
		}
		r := reply{Stats: d.stats()}
		if err != nil {
			r.Err = err.Error()
		}
		out.Encode(r)
		if req.Op == "close" {
			return 0
		}
	}
}

// daemon is the server side: the mount, its current generation and what
// every generation counted.
type daemon struct {
	lower, mnt, store string

	gen    *generation
	genNo  int
	server *fuse.Server
	counts counters
}

type counters struct {
	fileSyncs, dirSyncs, writtenBytes atomic.Uint64
	cuts, forcedCuts                  atomic.Uint64
	discardedBytes, keptBytes         atomic.Uint64
	discardedChanges, tornWrites      atomic.Uint64
}

func (d *daemon) stats() Stats {
	c := &d.counts
	return Stats{
		FileSyncs: c.fileSyncs.Load(), DirSyncs: c.dirSyncs.Load(), WrittenBytes: c.writtenBytes.Load(),
		Cuts: c.cuts.Load(), ForcedCuts: c.forcedCuts.Load(),
		DiscardedBytes: c.discardedBytes.Load(), KeptBytes: c.keptBytes.Load(),
		DiscardedChanges: c.discardedChanges.Load(), TornWrites: c.tornWrites.Load(),
	}
}

// mount builds a new generation from what lower holds now and mounts it;
// after a cut, kept carries the inode numbers over.
func (d *daemon) mount(kept *survivors) error {
	d.genNo++
	store := filepath.Join(d.store, strconv.Itoa(d.genNo))
	if err := os.Mkdir(store, 0o700); err != nil {
		return err
	}
	m, err := scan(d.lower, store, kept)
	if err != nil {
		return err
	}
	g := &generation{lower: d.lower, m: m, counts: &d.counts}
	sec := time.Second
	var zero time.Duration
	server, err := fusefs.Mount(d.mnt, &node{g: g, obj: m.root}, &fusefs.Options{
		MountOptions: fuse.MountOptions{
			// As root, mount(2) directly: no fusermount3 needed.
			DirectMount:   true,
			FsName:        "powercut",
			Name:          "powercut",
			DisableXAttrs: true,
		},
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &zero,
		RootStableAttr:  &fusefs.StableAttr{Ino: m.root.id},
	})
	if err != nil {
		return fmt.Errorf("powercut: mount %s on %s: %w", d.lower, d.mnt, err)
	}
	d.gen, d.server = g, server
	return nil
}

// idleWait is how long a Cut waits for the kernel to release the files of
// processes that were killed just before.
const idleWait = 5 * time.Second

func (d *daemon) cut(opts CutOptions) error {
	if d.server == nil {
		return ErrClosed
	}
	g := d.gen
	deadline := time.Now().Add(idleWait)
	for g.open.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	forced := g.open.Load() > 0
	g.mu.Lock()
	g.dead.Store(true)
	g.mu.Unlock()
	// No operation touches the model or the lower folder from here on.
	if err := g.m.verify(d.lower); err != nil {
		return err
	}
	if err := d.unmount(forced); err != nil {
		return err
	}
	if err := clearDir(d.lower); err != nil {
		return err
	}
	cc, kept, err := g.m.materialize(d.lower, opts)
	if err != nil {
		return fmt.Errorf("powercut: write what survived into %s: %w", d.lower, err)
	}
	d.counts.cuts.Add(1)
	d.counts.discardedBytes.Add(cc.discardedBytes)
	d.counts.keptBytes.Add(cc.keptBytes)
	d.counts.discardedChanges.Add(cc.discardedChanges)
	d.counts.tornWrites.Add(cc.tornWrites)
	if err := os.RemoveAll(g.m.store); err != nil {
		return err
	}
	return d.mount(kept)
}

// unmount takes the mount down; forced, or when it stays busy, it detaches
// it lazily and leaves the old server to fail what still comes (the
// generation is dead).
func (d *daemon) unmount(forced bool) error {
	if forced {
		d.counts.forcedCuts.Add(1)
	} else if err := d.server.Unmount(); err == nil {
		d.server = nil
		return nil
	} else {
		d.counts.forcedCuts.Add(1)
	}
	if err := syscall.Unmount(d.mnt, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("powercut: unmount %s: %w", d.mnt, err)
	}
	d.server = nil
	return nil
}

func (d *daemon) verify() error {
	if d.server == nil {
		return ErrClosed
	}
	g := d.gen
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m.verify(d.lower)
}

// close unmounts; the lower folder keeps everything, synced or not.
func (d *daemon) close() error {
	if d.server == nil {
		return nil
	}
	g := d.gen
	g.mu.Lock()
	g.dead.Store(true)
	g.mu.Unlock()
	err := d.unmount(g.open.Load() > 0)
	os.RemoveAll(g.m.store)
	return err
}
