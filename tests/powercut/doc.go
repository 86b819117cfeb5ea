// Package powercut is a FUSE file system for tests that loses, on command,
// everything a power cut would lose: it is a loopback over a real folder
// that remembers what has been made durable by fsync and what has not.
//
// A SIGKILL keeps the page cache, so everything written survives it; a
// power cut keeps only what was synced. Mount a folder, run the code under
// test on the mount point (in this process or in others), kill those
// processes, then Cut: the mount is taken down, the folder is rewritten to
// what a machine would find after the power came back, and the mount comes
// back with fresh kernel caches.
//
//	pfs := powercut.Mount(t, t.TempDir())
//	... write under pfs.Dir(), kill the writers ...
//	if err := pfs.Cut(powercut.CutOptions{}); err != nil { t.Fatal(err) }
//	... reopen under pfs.Dir() and check what survived ...
//
// # What survives a Cut
//
// The model is stricter than any real file system, so that what passes here
// does not depend on a file system's kindness (ext4's data=ordered, a
// journal that commits a rename with the next fsync of anything):
//
//   - A file's content and size are what they were at its last fsync or
//     fdatasync (the two are the same here: Linux's fdatasync flushes a
//     changed size too, and times are not modelled). A file never synced is
//     empty. A write through a file opened O_SYNC or O_DSYNC is synced.
//     Writes reach the daemon as they are made (no writeback cache), and
//     dirty pages of a shared writable mapping when the kernel writes them
//     back or on fsync, so both are covered.
//   - A folder's entries (names created, linked, renamed, removed) are what
//     they were at the folder's last fsync. A file created and synced in a
//     folder never synced after the creation is gone; a rename not followed
//     by an fsync of the folder it left and the folder it entered is undone
//     in each folder independently (so a rename between two folders synced
//     on one side only leaves the file in both, or in neither); a removal
//     not synced is undone, with the file's synced content. A folder never
//     synced since it was made is empty. Permission bits are those at the
//     object's last sync (or its creation).
//   - syncfs(2) and sync(2) do not reach a FUSE daemon (go-fuse does not
//     serve SYNCFS), so they make nothing durable here; sync_file_range(2)
//     is not a durability call either.
//   - CutOptions.KeepPrefix keeps, per file and per folder, a random prefix
//     of the changes made since its last sync, as a disk does that had
//     written part of its queue (a rename within one folder is one change:
//     the old name or the new survives, never neither); CutOptions.TearLastPage writes the first
//     change not kept (when it is a write) in part: a random number of its
//     leading 512-byte sectors, as a disk that lost power mid-page leaves
//     it. The choices come from CutOptions.Seed.
//
// Not modelled, and so dropped by a Cut: extended attributes (refused with
// ENOTSUP), owners (files are created by the daemon, so use the mount as
// root), times. Refused: device nodes and FIFOs (mknod), O_TMPFILE,
// RENAME_WHITEOUT, fallocate modes other than allocate, keep-size, punch
// hole and zero range. copy_file_range falls back to reads and writes.
// File locks are the kernel's own (the daemon does not ask for them), so
// flock and fcntl locks work between processes on one mount and vanish at a
// Cut, like a reboot.
//
// # The daemon
//
// The FUSE server is a process of its own: Mount starts the test binary
// again as the daemon (an init function of this package takes over when it
// sees POWERCUT_DAEMON), and Cut, Verify, Stats and Close are requests to
// it over a pipe. A process must never use a FUSE mount it serves: a page
// fault on a mapped file of the mount (bbolt and SQLite map their files)
// waits in the kernel for the server, Go's garbage collector waits for the
// faulting thread, and the server's goroutines wait for the collector. If
// the test dies, the daemon sees its pipe close and unmounts.
//
// # Processes using the mount at a Cut
//
// Kill them first (SIGKILL, then wait for them). Cut waits up to 5 s for the
// kernel to release their files; if files are still open then (a process
// still running, a descriptor or a mapping the test forgot), the cut goes
// ahead anyway, as a real one would: every later operation on those files
// fails with EIO, the mount is detached lazily (umount2 MNT_DETACH), and
// Stats.ForcedCuts counts it. Their old descriptors never reach the new
// mount.
//
// # Cost
//
// The unsynced changes are held in memory until their sync (or the Cut):
// this is for tests, not for gigabytes. Durable copies of the files are
// kept in a folder of the test's own; a Cut and a Mount copy every file
// once.
package powercut
