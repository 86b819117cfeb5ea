package powercut

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	_ "modernc.org/sqlite"
)

// The stores the spool and the writer are built on, on the power-cut file
// system: what their commits are worth after a power cut.

const (
	childEnv     = "POWERCUT_SQLITE_CHILD" // database path: run as the SQLite child
	childSyncEnv = "POWERCUT_SQLITE_SYNC"  // its synchronous setting
	childCkptEnv = "POWERCUT_SQLITE_CKPT"  // its wal_autocheckpoint, in pages
	rowsPerTx    = 20
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		pages, _ := strconv.Atoi(os.Getenv(childCkptEnv))
		sqliteChild(path, os.Getenv(childSyncEnv), pages)
		return
	}
	os.Exit(m.Run())
}

var bucket = []byte("b")

// boltCreate creates a bbolt database and syncs its folder, which bbolt
// never does: without it the file itself is not durable.
func boltCreate(t *testing.T, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	syncDir(t, filepath.Dir(path))
	return db
}

func boltPut(t *testing.T, db *bbolt.DB, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		err := db.Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucket)
			if err != nil {
				return err
			}
			return b.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), make([]byte, 700))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// boltKeys opens the database, checks it, and counts the keys.
func boltKeys(t *testing.T, path string) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		if b := tx.Bucket(bucket); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// bbolt syncs its file at every commit, but never the folder it creates
// the file in: that is the creator's job (the spool syncs its folder after
// creating a segment). With it, every commit survives a cut.
func TestFS_Cut_BboltCommitsSurvive(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	path := filepath.Join(pfs.Dir(), "b.db")
	db := boltCreate(t, path)
	boltPut(t, db, 0, 200)
	db.Close()
	for seed := uint64(1); seed <= 3; seed++ {
		cut(t, pfs, CutOptions{KeepPrefix: true, TearLastPage: true, Seed: seed})
		if n := boltKeys(t, path); n != 200 {
			t.Fatalf("seed %d: %d keys after the cut, want all 200 committed", seed, n)
		}
	}

	// Without the folder sync the whole database is gone.
	lost := filepath.Join(pfs.Dir(), "lost.db")
	db, err := bbolt.Open(lost, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	boltPut(t, db, 0, 10)
	db.Close()
	cut(t, pfs, CutOptions{})
	wantMissing(t, lost)
}

// With NoSync (and NoGrowSync, or growing the file syncs it), commits are
// in the page cache only: a SIGKILL keeps them, a power cut does not.
func TestFS_Cut_BboltNoSyncLosesCommits(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	path := filepath.Join(pfs.Dir(), "b.db")
	db := boltCreate(t, path)
	boltPut(t, db, 0, 50)
	db.NoSync, db.NoGrowSync = true, true
	boltPut(t, db, 50, 250)
	db.Close()
	if n := boltKeys(t, path); n != 250 {
		t.Fatalf("%d keys before the cut, want 250", n)
	}
	cut(t, pfs, CutOptions{})
	if n := boltKeys(t, path); n != 50 {
		t.Fatalf("%d keys after the cut, want the 50 synced ones", n)
	}
}

// openSQLite opens path with the writer's connection settings
// (writer/dbfile/db.go), synchronous and wal_autocheckpoint as given.
func openSQLite(path, synchronous string, checkpointPages int) (*sql.DB, error) {
	q := url.Values{}
	for _, p := range []string{"auto_vacuum(INCREMENTAL)", "journal_mode(WAL)", "synchronous(" + synchronous + ")",
		"foreign_keys(OFF)", "busy_timeout(5000)", "temp_store(MEMORY)", "journal_size_limit(67108864)",
		fmt.Sprintf("wal_autocheckpoint(%d)", checkpointPages)} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)"); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// sqliteChild commits transactions of rowsPerTx rows until it is killed,
// printing "C k" once the transaction ending with row k is committed.
func sqliteChild(path, synchronous string, checkpointPages int) {
	db, err := openSQLite(path, synchronous, checkpointPages)
	if err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	var k int64
	if err := db.QueryRow("SELECT coalesce(max(k), 0) FROM t").Scan(&k); err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	v := make([]byte, 1500)
	for {
		tx, err := db.Begin()
		if err == nil {
			for i := 0; i < rowsPerTx && err == nil; i++ {
				k++
				_, err = tx.Exec("INSERT INTO t (k, v) VALUES (?, ?)", k, v)
			}
			if err == nil {
				err = tx.Commit()
			}
		}
		if err != nil {
			fmt.Println("E", err)
			os.Exit(1)
		}
		fmt.Println("C", k)
	}
}

// runSQLiteChild runs the child until it has reported at least minCommits
// commits, kills it at a random moment after that, and returns the last
// row it reported committed.
func runSQLiteChild(t *testing.T, path, synchronous string, checkpointPages, minCommits int, rng *rand.Rand) int64 {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path, childSyncEnv+"="+synchronous, childCkptEnv+"="+strconv.Itoa(checkpointPages))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var last int64
	commits := 0
	killed := false
	kill := func() {
		if !killed {
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				if !killed {
					t.Fatal("the SQLite child exited by itself")
				}
				return last
			}
			if strings.HasPrefix(l, "E ") {
				kill()
				t.Fatalf("SQLite child: %s", l)
			}
			if k, err := strconv.ParseInt(strings.TrimPrefix(l, "C "), 10, 64); err == nil {
				last = k
				if commits++; commits == minCommits {
					kill()
				}
			}
		case <-deadline:
			kill()
			t.Fatalf("the SQLite child made %d commits in 2 minutes, want %d", commits, minCommits)
		}
	}
}

// sqliteRows checks the database and returns its row count and highest
// key; a database the cut took away whole has no rows.
func sqliteRows(t *testing.T, path string) (n, maxK int64, integrity string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		return 0, 0, "missing"
	}
	db, err := openSQLite(path, "FULL", 1000)
	if err != nil {
		return 0, 0, err.Error()
	}
	defer db.Close()
	ctx := context.Background()
	if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&integrity); err != nil {
		return 0, 0, err.Error()
	}
	if err := db.QueryRowContext(ctx, "SELECT count(*), coalesce(max(k), 0) FROM t").Scan(&n, &maxK); err != nil {
		return 0, 0, err.Error()
	}
	return n, maxK, integrity
}

// TestFS_Cut_SQLiteWALFullCommitsSurvive shows that the writer's settings
// (WAL, synchronous=FULL) make a commit durable when it returns: a child
// commits until it is SIGKILLed at a random moment, the power is cut (with
// and without a random prefix of the unsynced writes kept and the last
// page torn), and every transaction it reported committed is there, whole,
// in a database that passes integrity_check.
func TestFS_Cut_SQLiteWALFullCommitsSurvive(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	path := filepath.Join(pfs.Dir(), "db.sqlite")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		seed := rng.Uint64()
		// Checkpoints every few commits (a transaction is about 8 pages),
		// so that cuts land in and after them too.
		last := runSQLiteChild(t, path, "FULL", 50, 10+rng.IntN(60), rng)
		opts := CutOptions{KeepPrefix: round%2 == 1, TearLastPage: round%3 != 0, Seed: seed}
		cut(t, pfs, opts)
		n, maxK, integrity := sqliteRows(t, path)
		if integrity != "ok" {
			t.Fatalf("round %d (cut %+v): integrity_check: %s", round, opts, integrity)
		}
		if maxK < last || n != maxK || n%rowsPerTx != 0 {
			t.Fatalf("round %d (cut %+v): %d rows, highest %d; the child reported row %d committed, in transactions of %d",
				round, opts, n, maxK, last, rowsPerTx)
		}
		t.Logf("round %d: reported committed through row %d, found %d rows (cut %+v)", round, last, n, opts)
	}
	s := pfs.Stats()
	t.Logf("file syncs %d, folder syncs %d, unsynced bytes discarded %d, kept %d, torn writes %d",
		s.FileSyncs, s.DirSyncs, s.DiscardedBytes, s.KeptBytes, s.TornWrites)
}

// TestFS_Cut_SQLiteWeakerSyncLosesCommits is the control: with
// synchronous=OFF SQLite never syncs, with NORMAL it syncs the WAL only at
// checkpoints, and commits it reported are gone after a cut, which a
// SIGKILL alone would never show. (A kill just after a checkpoint loses
// nothing under NORMAL: checkpoints are rare here, about every 125
// commits, and each setting gets a few tries.)
func TestFS_Cut_SQLiteWeakerSyncLosesCommits(t *testing.T) {
	for _, synchronous := range []string{"OFF", "NORMAL"} {
		t.Run(synchronous, func(t *testing.T) {
			pfs := Mount(t, t.TempDir())
			path := filepath.Join(pfs.Dir(), "db.sqlite")
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
			for try := 1; ; try++ {
				// No look at the database before the cut: the last
				// connection to close checkpoints, and that syncs.
				last := runSQLiteChild(t, path, synchronous, 1000, 30, rng)
				cut(t, pfs, CutOptions{})
				n, _, integrity := sqliteRows(t, path)
				if integrity != "ok" && integrity != "missing" {
					t.Fatalf("after the cut: integrity_check: %s", integrity)
				}
				if n < last {
					t.Logf("synchronous=%s: %d rows reported committed, %d after the cut (database: %s)", synchronous, last, n, integrity)
					return
				}
				if try == 5 {
					t.Fatalf("synchronous=%s lost no reported commit in %d cuts", synchronous, try)
				}
			}
		})
	}
}
