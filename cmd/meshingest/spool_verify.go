package main

import (
	"fmt"
	"io"

	"github.com/meshingest/meshingest/spool"
)

func spoolVerify(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("verify", "verify [--dir DIR | --config FILE] [--json]", stderr, true)
	if code := f.parse(args); code >= 0 {
		return code
	}
	rep, err := spool.Verify(f.dir)
	if err != nil {
		return f.fail(err)
	}
	status := 0
	if rep.Damaged() {
		status = 1
	}
	if f.json {
		writeJSON(stdout, struct {
			spool.VerifyReport
			OK bool `json:"ok"`
		}{rep, status == 0})
		return status
	}
	bad := 0
	for _, s := range rep.Segments {
		if !s.OK {
			bad++
			if s.SetAside > 0 {
				fmt.Fprintf(stdout, "DAMAGED %s: %s; the writer sets it aside whole, with its %d records\n", s.Name, s.Damage, s.SetAside)
				continue
			}
			lost := fmt.Sprintf("%d lost", s.Lost)
			if !s.LostExact {
				lost = fmt.Sprintf("at least %d lost", s.Lost)
			}
			fmt.Fprintf(stdout, "DAMAGED %s: %s; %d intact records, %d damaged, %s, %d unreadable entries\n", s.Name, s.Damage, s.Intact, s.Damaged, lost, s.Entries)
		} else if s.State == spool.StateUnsealed {
			fmt.Fprintf(stdout, "unsealed %s (left by a stopped receiver; sealed when it starts): %d intact records, %d damaged, %d unreadable entries\n",
				s.Name, s.Intact, s.Damaged, s.Entries)
		}
	}
	fmt.Fprintf(stdout, "%d segments, %d records checked, %d damaged; %d items in quarantine\n", len(rep.Segments), rep.Records, bad, rep.Quarantined)
	if bad > 0 {
		fmt.Fprintln(stdout, "the writer rebuilds a damaged segment from its intact records when it reaches it, and moves the rest to quarantine/")
	}
	return status
}
