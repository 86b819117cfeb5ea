package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meshingest/meshingest/spool"
)

// spoolIdentity shows the folder's spool identity and, with --adopt,
// records a folder that was moved (copied to a new disk, the original
// gone) as the home of its identity, so that the receiver appends to it
// again.
func spoolIdentity(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("identity", "identity [--dir DIR | --config FILE] [--adopt] [--json]", stderr, true)
	adopt := f.fs.Bool("adopt", false, "this folder was moved, not copied: the original is gone; let the receiver append to it")
	if code := f.parse(args); code >= 0 {
		return code
	}
	var info spool.IdentityInfo
	var err error
	if *adopt {
		info, err = spool.AdoptCopiedFolder(f.dir)
	} else {
		info, err = spool.ReadIdentity(f.dir)
	}
	if err != nil {
		return f.fail(err)
	}
	if f.json {
		writeJSON(stdout, info)
		return 0
	}
	fmt.Fprintln(stdout, identityLine(&info))
	return 0
}

// identityLine says what an identity file holds, in one line.
func identityLine(info *spool.IdentityInfo) string {
	if info == nil {
		return "none yet (given when the receiver or the writer opens the folder)"
	}
	notes := []string{"since " + info.CreatedAt.Format(time.RFC3339)}
	if info.AdoptedLegacy {
		notes = append(notes, "adopted: the folder predates identities, and a writer's old position applies to it")
	}
	if info.Restored {
		notes = append(notes, "restored from the segments")
	}
	if info.Copied {
		notes = append(notes, "A COPY of the folder it was given to: the receiver refuses to append (`spool identity --adopt` if it was moved)")
	}
	return fmt.Sprintf("%s (%s)", info.ID, strings.Join(notes, "; "))
}
