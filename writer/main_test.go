package writer

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
)

// -long (or MESHINGEST_LONG_TESTS=1, which reaches every package of
// ./...) runs the long versions of the fault tests: the SIGKILL test with
// more messages and kills, the lock test with CoreScope's 60 s lock and
// more traffic.
var longFlag = flag.Bool("long", false, "run the long fault-injection tests")

func long() bool { return *longFlag || testkit.Long() }

// The test binary doubles as the "second process" some tests need.
const envLockHolder = "MESHINGEST_TEST_LOCK_HOLDER" // DB path; hold BEGIN EXCLUSIVE

func TestMain(m *testing.M) {
	if path := os.Getenv(envLockHolder); path != "" {
		os.Exit(holdExclusiveLock(path))
	}
	code := m.Run()
	testkit.CleanupBinary()
	os.Exit(code)
}

// holdExclusiveLock takes the database's write lock with BEGIN EXCLUSIVE,
// says "locked" on stdout, holds it for MESHINGEST_TEST_LOCK_SECONDS and
// releases it: what a VACUUM, a backup tool or a migration does to the
// writer.
func holdExclusiveLock(path string) int {
	secs, _ := strconv.ParseFloat(os.Getenv("MESHINGEST_TEST_LOCK_SECONDS"), 64)
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(30000)")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("locked")
	time.Sleep(time.Duration(secs * float64(time.Second)))
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
