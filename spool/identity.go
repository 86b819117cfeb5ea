package spool

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// A spool folder has an identity: 16 random bytes, given when the folder is
// first opened by an appender or a writer's reader, kept in the "identity"
// file and written into the trailer of every segment sealed since. Seqs
// restart at 1 in a new folder (a replaced disk, `rm -rf spool`, the spool
// disk not mounted at boot so that a fresh folder appears on the root
// disk), so a Seq alone does not name a record: (identity, Seq) does, and a
// Position names its spool. A consumer keeps one position per identity: a
// spool it has not seen starts at its first record, and a spool it knows
// again (the real disk mounted back) continues where it stopped.
//
// The identity file is JSON, format 1:
//
//	{"format": 1, "identity": "<32 hex digits>", "created_at": "<RFC 3339>",
//	 "adopted_legacy": false, "restored": false, "folder_inode": 1234}
//
// adopted_legacy is true when the folder was made by a meshingest without
// identities (it had segments, a sequence file or a writer position but no
// identity file): its Seqs continue the single position such a writer
// stored, and that position applies to this identity. restored is true
// when the file was missing but the segments' trailers all named one
// identity: the file was written back from them. folder_inode is the
// folder's inode when the file was written, to tell a copy of the folder
// (see Copied) from the folder itself.
type Identity [16]byte

// IdentityInfo is the identity file of a spool folder.
type IdentityInfo struct {
	Format        int       `json:"format"`
	ID            Identity  `json:"identity"`
	CreatedAt     time.Time `json:"created_at"`
	AdoptedLegacy bool      `json:"adopted_legacy"`
	Restored      bool      `json:"restored,omitempty"`
	FolderInode   uint64    `json:"folder_inode"`
	// Copied is not stored: it is true when the folder's inode is not the
	// one recorded, i.e. the folder is a copy (cp -a, rsync to a new disk)
	// of the one the identity was given to. Reading a copy is safe, since
	// positions are per identity; appending to it is refused
	// (ErrCopiedSpool), since two folders appended under one identity
	// would issue the same Seqs.
	Copied bool `json:"copied,omitempty"`
}

const identityFormat = 1

var (
	// ErrOtherSpool refuses a Position of another spool: applying it would
	// skip or repeat records of this one.
	ErrOtherSpool = errors.New("spool: position of another spool")
	// ErrCopiedSpool refuses to append to a copy of a spool folder.
	ErrCopiedSpool = errors.New("spool: folder is a copy of another spool folder")
	// ErrNoIdentity means a folder has no identity file yet (only an
	// inspecting reader sees it: appenders and writers' readers create it).
	ErrNoIdentity = errors.New("spool: folder has no identity yet")
)

func (id Identity) IsZero() bool { return id == Identity{} }

// String is the identity in hex; "-" for the zero identity.
func (id Identity) String() string {
	if id.IsZero() {
		return "-"
	}
	return hex.EncodeToString(id[:])
}

// Short is the first 8 hex digits, for logs and tables.
func (id Identity) Short() string {
	if id.IsZero() {
		return "-"
	}
	return hex.EncodeToString(id[:4])
}

func (id Identity) MarshalText() ([]byte, error) {
	if id.IsZero() {
		return []byte{}, nil
	}
	return []byte(id.String()), nil
}

func (id *Identity) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*id = Identity{}
		return nil
	}
	v, err := ParseIdentity(string(b))
	*id = v
	return err
}

// ParseIdentity parses 32 hex digits.
func ParseIdentity(s string) (Identity, error) {
	var id Identity
	if len(s) != 2*len(id) {
		return Identity{}, fmt.Errorf("spool identity %q: want %d hex digits", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return Identity{}, fmt.Errorf("spool identity %q: %w", s, err)
	}
	return id, nil
}

func newIdentity() (Identity, error) {
	var id Identity
	for id.IsZero() {
		if _, err := rand.Read(id[:]); err != nil {
			return Identity{}, err
		}
	}
	return id, nil
}

// ReadIdentity reads the identity file of the spool in dir, without
// creating it: ErrNoIdentity when there is none yet.
func ReadIdentity(dir string) (IdentityInfo, error) {
	path := filepath.Join(dir, identityFile)
	f, err := openSpoolFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return IdentityInfo{}, &Error{Op: "read identity", Path: path, Err: ErrNoIdentity,
			Hint: "the receiver or the writer gives the folder its identity when it opens it"}
	}
	if err != nil {
		return IdentityInfo{}, &Error{Op: "read identity", Path: path, Err: err}
	}
	defer f.Close()
	var info IdentityInfo
	dec := json.NewDecoder(f)
	if err := dec.Decode(&info); err != nil || info.ID.IsZero() {
		if err == nil {
			err = errors.New("no identity in it")
		}
		return IdentityInfo{}, &Error{Op: "read identity", Path: path, Err: fmt.Errorf("%w: %v", ErrCorrupt, err),
			Hint: "restore it from a backup; or move it away: the folder's segments then give it back its identity, or a folder without segments a new one"}
	}
	if info.Format > identityFormat {
		return IdentityInfo{}, &Error{Op: "read identity", Path: path, Err: fmt.Errorf("identity file format %d (this build reads %d)", info.Format, identityFormat),
			Hint: "a newer meshingest wrote it; run that version"}
	}
	ino, err := folderInode(dir)
	info.Copied = err == nil && info.FolderInode != 0 && ino != info.FolderInode
	return info, nil
}

// openIdentity returns the identity of the spool in dir (whose folder
// prepareDir made or checked), giving the folder one if it has none: the
// identity its sealed segments carry when the file was lost, or a new one,
// marked adopted_legacy when the folder holds the files of a spool made
// before identities.
func openIdentity(dir string) (IdentityInfo, error) {
	info, err := ReadIdentity(dir)
	if !errors.Is(err, ErrNoIdentity) {
		return info, err
	}
	info = IdentityInfo{Format: identityFormat, CreatedAt: time.Now().UTC()}
	carried, err := segmentIdentities(dir)
	if err != nil {
		return IdentityInfo{}, err
	}
	switch len(carried) {
	case 0:
		if info.ID, err = newIdentity(); err != nil {
			return IdentityInfo{}, &Error{Op: "make identity", Path: dir, Err: err}
		}
		info.AdoptedLegacy = hasLegacyFiles(dir)
	case 1:
		for id := range carried {
			info.ID = id
		}
		info.Restored = true
	default:
		return IdentityInfo{}, &Error{Op: "restore identity", Path: filepath.Join(dir, identityFile),
			Err:  fmt.Errorf("the identity file is missing and the segments name %d different spools", len(carried)),
			Hint: "segments of another spool were copied in: `meshingest spool ls` shows each segment's spool; move the foreign ones out, then start again"}
	}
	if info.FolderInode, err = folderInode(dir); err != nil {
		return IdentityInfo{}, &Error{Op: "make identity", Path: dir, Err: err}
	}
	return writeIdentity(dir, info)
}

// writeIdentity creates the identity file with info, unless another
// process created it first (the receiver and the writer may start at the
// same moment on a fresh folder): then the file it wrote wins and is
// returned. The content is synced under a temporary name and linked to
// "identity", which fails when the name exists, then the folder synced.
func writeIdentity(dir string, info IdentityInfo) (IdentityInfo, error) {
	path := filepath.Join(dir, identityFile)
	b, _ := json.MarshalIndent(info, "", "  ")
	tmp, err := writeSyncedTemp(path, append(b, '\n'))
	if err == nil {
		err = os.Link(tmp, path)
		os.Remove(tmp)
	}
	if errors.Is(err, os.ErrExist) {
		return ReadIdentity(dir)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return IdentityInfo{}, &Error{Op: "write identity", Path: path, Err: err, Hint: hintForWriteError(err)}
	}
	return info, nil
}

// segmentIdentities returns the identities the sealed segments' trailers
// carry (format 2 trailers; older ones carry none).
func segmentIdentities(dir string) (map[Identity]int, error) {
	segs, err := listSegments(dir, sealedExt)
	if err != nil {
		return nil, err
	}
	ids := map[Identity]int{}
	for _, s := range segs {
		if t, err := segmentTrailer(dir, s); err == nil && !t.Spool.IsZero() {
			ids[t.Spool]++
		}
	}
	return ids, nil
}

// hasLegacyFiles reports whether dir holds the files of a spool made
// before identities: any segment, the sequence file or a writer position.
func hasLegacyFiles(dir string) bool {
	for _, name := range []string{sequenceFile, positionFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	segs, _ := listSegments(dir, sealedExt, activeExt, tmpExt, recoveredExt, repairingExt)
	return len(segs) > 0
}

func folderInode(dir string) (uint64, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// AdoptCopiedFolder records the folder in dir as the home of its identity,
// for a folder that was moved (to a new disk, say) rather than copied: the
// operator says the original is gone. It refuses nothing else.
func AdoptCopiedFolder(dir string) (IdentityInfo, error) {
	info, err := ReadIdentity(dir)
	if err != nil {
		return info, err
	}
	if !info.Copied {
		return info, nil
	}
	if info.FolderInode, err = folderInode(dir); err != nil {
		return info, err
	}
	info.Copied = false
	path := filepath.Join(dir, identityFile)
	b, _ := json.MarshalIndent(info, "", "  ")
	tmp, err := writeSyncedTemp(path, append(b, '\n'))
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return info, &Error{Op: "write identity", Path: path, Err: err, Hint: hintForWriteError(err)}
	}
	return info, nil
}

// writeSyncedTemp writes b to a temporary file beside path and syncs it;
// the caller links or renames it into place and syncs the folder.
func writeSyncedTemp(path string, b []byte) (string, error) {
	var r [4]byte
	rand.Read(r[:])
	tmp := path + ".tmp." + strconv.Itoa(os.Getpid()) + "." + hex.EncodeToString(r[:])
	f, err := openSpoolFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", &Error{Op: "write", Path: tmp, Err: err}
	}
	_, err = f.Write(b)
	if err == nil {
		err = fdatasyncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", &Error{Op: "write", Path: tmp, Err: err, Hint: hintForWriteError(err)}
	}
	return tmp, nil
}

// HasIdentity reports whether dir is a spool folder that has its identity
// already: what the writer looks for below a spoolDir of receiver
// instances (their folders get theirs when the appender first opens them).
func HasIdentity(dir string) bool {
	fi, err := os.Lstat(filepath.Join(dir, identityFile))
	return err == nil && fi.Mode().IsRegular()
}
