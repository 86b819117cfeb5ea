package writer

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

// TestClassify_RealSQLiteErrors provokes each kind of refusal on a real
// database and checks how the writer classifies it.
func TestClassify_RealSQLiteErrors(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meshcore.db")
	d, _ := openMigrated(t, path)

	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	oc, _ := other.Conn(ctx)
	defer oc.Close()

	ro, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()

	full, err := sql.Open("sqlite", "file:"+path+"?_pragma=max_page_count(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	full.SetMaxOpenConns(1)

	cases := []struct {
		want   troubleKind
		reopen bool
		run    func() error
	}{
		{troubleBusy, false, func() error {
			if _, err := d.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			defer d.conn.ExecContext(ctx, "ROLLBACK")
			_, err := oc.ExecContext(ctx, "BEGIN IMMEDIATE")
			return err
		}},
		{troubleReadOnly, true, func() error {
			_, err := ro.Exec(`INSERT INTO _migrations (name) VALUES ('x')`)
			return err
		}},
		{troubleDiskFull, false, func() error {
			_, err := full.Exec(`INSERT INTO _migrations (name) VALUES (hex(randomblob(3000)))`)
			return err
		}},
		{troubleSchema, true, func() error {
			_, err := d.conn.ExecContext(ctx, `INSERT INTO no_such_table VALUES (1)`)
			return err
		}},
		{troubleMissing, true, func() error {
			_, err := openDatabase(ctx, filepath.Join(t.TempDir(), "gone.db"), false, DBOptions{})
			return err
		}},
	}
	for _, c := range cases {
		err := c.run()
		if err == nil {
			t.Errorf("%s: no error provoked", c.want)
			continue
		}
		kind, reopen := classify(err)
		if kind != c.want || reopen != c.reopen {
			t.Errorf("classify(%v) = %s, %v; want %s, %v", err, kind, reopen, c.want, c.reopen)
		}
	}
}
