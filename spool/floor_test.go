package spool

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

func TestDefaultMinFree_ScalesToTheDisk(t *testing.T) {
	for _, c := range []struct{ total, want int64 }{
		{-1, DefaultMinFreeBytes},       // unknown
		{1 << 40, DefaultMinFreeBytes},  // 1 TiB
		{20 << 30, DefaultMinFreeBytes}, // 20 GiB: 5 % is over the cap
		{4 << 30, 4 << 30 / 100 * 5},    // a 4 GiB volume: 204.8 MiB
		{64 << 20, 671_088 * 5},         // a 64 MiB tmpfs: 3.2 MiB
	} {
		got := defaultMinFree(c.total)
		if got != c.want {
			t.Errorf("defaultMinFree(%d) = %d, want %d", c.total, got, c.want)
		}
	}
}

// On a small disk the fixed 512 MiB floor refused every append from the
// start (the receiver reported READY and dropped all QoS 0). The default
// floor is now 5 % of such a disk, and an explicit one is kept as set.
func TestAppender_SmallDisk_DefaultFloorScaled(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64m,mode=0700"); err != nil {
		t.Skipf("cannot mount a small tmpfs (%v); this test needs root", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })

	a, err := OpenAppender(filepath.Join(mnt, "spool"), fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	st := a.Stats()
	if want := defaultMinFree(64 << 20); st.MinFreeBytes != want || st.Blocked != "" {
		t.Fatalf("floor %d (want %d), blocked %q", st.MinFreeBytes, want, st.Blocked)
	}
	if err := a.Append(testRecord(1, 100), nil); err != nil {
		t.Fatalf("append on a 64 MiB disk: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// An explicit floor above what is free: nothing can be appended, and
	// Stats says so before anything is tried.
	opts := fastOptions()
	opts.MinFreeBytes = 512 << 20
	a, err = OpenAppender(filepath.Join(mnt, "spool"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if st := a.Stats(); st.MinFreeBytes != 512<<20 || st.Blocked == "" || !st.Full {
		t.Fatalf("explicit floor: stats %+v", st)
	}
	if err := a.Append(testRecord(2, 100), nil); !errors.Is(err, ErrFull) {
		t.Fatalf("append under the floor: %v, want ErrFull", err)
	}
}
