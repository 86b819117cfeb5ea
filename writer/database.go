package writer

import (
	"context"
	"database/sql"
	"errors"

	"github.com/meshingest/meshingest/writer/dbfile"
)

// The database file itself (opening it, what is wrong with it, the
// episodes of refused writes, the writer's lock) is package dbfile; this
// is the writer's side of it.

// ErrLocked is what a *dbfile.LockError matches with errors.Is: another
// writer holds the database or the spool folder.
var ErrLocked = dbfile.ErrLocked

// database is the open database file, with its one connection.
type database struct {
	*dbfile.File
	conn *sql.Conn // File.Conn
}

func openDatabase(ctx context.Context, path string, create bool, opts dbfile.Options) (*database, error) {
	f, err := dbfile.Open(ctx, path, create, opts)
	if err != nil {
		return nil, err
	}
	return &database{File: f, conn: f.Conn}, nil
}

// classify is dbfile.Classify and the one refusal only the writer can
// tell: another writer committed a batch (checkPosition).
func classify(err error) (kind dbfile.Kind, reopen bool) {
	if errors.Is(err, errPositionMoved) {
		return dbfile.OtherWriter, true
	}
	return dbfile.Classify(err)
}
