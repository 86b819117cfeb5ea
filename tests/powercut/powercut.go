package powercut

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// FS is a mounted power-cut file system over a lower folder. Its server
// is a daemon process of its own (daemon.go says why); FS talks to it.
type FS struct {
	lower, mnt string

	mu     sync.Mutex // one request at a time
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *json.Decoder
	closed bool
	last   Stats // at Close
}

// Stats counts what the file system saw and threw away, over every Cut.
type Stats struct {
	FileSyncs    uint64 // fsync or fdatasync of a file (and writes through O_SYNC/O_DSYNC files)
	DirSyncs     uint64 // fsync of a folder
	WrittenBytes uint64 // bytes written through the mount
	Cuts         uint64
	// ForcedCuts found files still open on the mount (which then fail with
	// EIO) and detached it lazily.
	ForcedCuts uint64
	// DiscardedBytes are unsynced written bytes the Cuts threw away;
	// KeptBytes those that CutOptions kept. Bytes of objects no durable
	// name reaches are not counted: they go with their object.
	DiscardedBytes uint64
	KeptBytes      uint64
	// DiscardedChanges are unsynced truncates and folder entries (made,
	// renamed, removed) that the Cuts threw away.
	DiscardedChanges uint64
	TornWrites       uint64
}

// ErrClosed is returned by Cut and Verify after Close.
var ErrClosed = errors.New("powercut: file system closed")

var (
	probeOnce sync.Once
	probeErr  error
)

// Available reports whether a FUSE file system can be mounted here (it
// mounts one once to find out), and if not, why.
func Available() error {
	probeOnce.Do(func() {
		f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			probeErr = fmt.Errorf("powercut: no FUSE here: %w (needs /dev/fuse, and root or fusermount3)", err)
			return
		}
		f.Close()
		base, err := os.MkdirTemp("", "powercut-probe-")
		if err != nil {
			probeErr = err
			return
		}
		defer os.RemoveAll(base)
		dirs := []string{filepath.Join(base, "lower"), filepath.Join(base, "mnt"), filepath.Join(base, "store")}
		for _, d := range dirs {
			if probeErr = os.Mkdir(d, 0o700); probeErr != nil {
				return
			}
		}
		p, err := start(dirs[0], dirs[1], dirs[2])
		if err != nil {
			probeErr = fmt.Errorf("powercut: cannot mount FUSE here: %w", err)
			return
		}
		p.Close()
	})
	return probeErr
}

// Mount mounts a power-cut file system showing lower, whose present
// content counts as durable, on a new folder (Dir). The test is skipped
// when FUSE is not available here. At the end of the test the model is
// verified against the lower folder and the file system closed.
func Mount(t testing.TB, lower string) *FS {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	f, err := start(lower, t.TempDir(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Verify(); err != nil && !errors.Is(err, ErrClosed) {
			t.Error(err)
		}
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

// start runs the daemon and waits until its mount is up.
func start(lower, mnt, store string) (*FS, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), daemonEnv+"="+lower, daemonMntEnv+"="+mnt, daemonStoreEnv+"="+store)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("powercut: start the daemon: %w", err)
	}
	f := &FS{lower: lower, mnt: mnt, cmd: cmd, in: in, out: json.NewDecoder(bufio.NewReader(out))}
	var r reply
	if err := f.out.Decode(&r); err != nil || r.Err != "" {
		in.Close()
		cmd.Wait()
		if err == nil {
			err = errors.New(r.Err)
		}
		return nil, fmt.Errorf("powercut: the daemon did not mount %s: %w", mnt, err)
	}
	return f, nil
}

// Dir is the mount point.
func (f *FS) Dir() string { return f.mnt }

// Lower is the folder the mount shows: after a Cut, what survived.
func (f *FS) Lower() string { return f.lower }

// call sends one request and waits for its reply.
func (f *FS) call(req request) (Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return f.last, ErrClosed
	}
	if err := json.NewEncoder(f.in).Encode(req); err != nil {
		return Stats{}, fmt.Errorf("powercut: the daemon is gone: %w", err)
	}
	var r reply
	if err := f.out.Decode(&r); err != nil {
		return Stats{}, fmt.Errorf("powercut: the daemon is gone: %w", err)
	}
	if r.Err != "" {
		return r.Stats, errors.New(r.Err)
	}
	return r.Stats, nil
}

// Cut simulates a power cut and the reboot after it: the mount goes down,
// the lower folder is rewritten to what was durable (plus what opts keep of
// the rest), and the mount comes back on the same Dir with nothing cached.
// Kill the processes using the mount first and close what the test itself
// has open there; files still open after a moment are cut off (package
// documentation). When the model is out of step with the lower folder (see
// Verify) Cut fails and leaves the mount failing every operation.
func (f *FS) Cut(opts CutOptions) error {
	_, err := f.call(request{Op: "cut", Opts: opts})
	return err
}

// Verify checks that the model agrees with the lower folder: a bug of this
// package, or a change made to the lower folder behind the mount, fails it.
func (f *FS) Verify() error {
	_, err := f.call(request{Op: "verify"})
	return err
}

// Stats returns the counters (their last values after Close).
func (f *FS) Stats() Stats {
	s, _ := f.call(request{Op: "stats"})
	return s
}

// Close unmounts the file system and stops the daemon; the lower folder
// keeps everything, synced or not, as after a clean shutdown.
func (f *FS) Close() error {
	s, err := f.call(request{Op: "close"})
	if errors.Is(err, ErrClosed) {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed, f.last = true, s
	f.in.Close()
	if werr := f.cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("powercut: daemon: %w", werr)
	}
	return err
}
