package harness

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/tests/loadgen"
)

// The scenarios of this file try the edges of the design the way an
// operator's mistakes would (issue 18, cases 1, 2, 4, 6 and 7): the spool
// folder wiped or replaced by a copy, a second writer, segment files
// swapped or copied in, huge publishes, retained messages replayed at
// every subscribe. Each one is judged, like the others, against the
// generator's accounting.

// BoundaryScenarios are the names of issue 18's scenarios, in run order.
var BoundaryScenarios = []string{"spool-wiped", "spool-wiped-live", "two-writers", "segments-swapped", "huge-publish", "retained-replay"}

func boundaryScenarios() []Scenario {
	return []Scenario{
		{"spool-wiped", "the spool folder wiped, then replaced by a copy of itself, between runs of the receiver and the writer", runSpoolWiped},
		{"two-writers", "a second writer started on the same database and spool under load: refused, the first goes on", runTwoWriters},
		{"segments-swapped", "two sealed segment files swapped, a segment of another spool and a backup of drained ones copied into the spool", runSegmentsSwapped},
		{"huge-publish", "publishes far over spool.maxPayloadBytes at QoS 0 and 1 among the small ones", runHugePublish},
		{"retained-replay", "retained packet messages replayed to the receiver at each of its restarts", runRetainedReplay},
		{"spool-wiped-live", "the spool folder deleted under a running receiver and writer (QoS 1): the receiver remakes it, the writer reopens it", runSpoolWipedLive},
	}
}

// HugePublish is one oversized publish of the huge-publish scenario.
type HugePublish struct {
	QoS   byte
	Bytes int
}

// hugeRSSLimit is the receiver's memory bound with huge publishes in
// flight: the 64 MiB goal plus a small multiple of the payload limit
// (the receiver's own test uses the same bound).
const hugeRSSLimit = rssLimit + 8*spool.DefaultMaxPayloadBytes

// stopReceiver stops the receiver with SIGTERM, keeping its drop counters.
func stopReceiver(e *Env) error {
	e.bankReceiver()
	return e.Receiver.Stop(10 * time.Second)
}

// runOnce runs the meshingest binary to its end (at most timeout) and
// returns its exit status and combined output.
func runOnce(bin string, timeout time.Duration, args ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return -1, string(out), fmt.Errorf("%s %s: still running after %s", bin, strings.Join(args, " "), timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out), nil
	}
	if err != nil {
		return -1, string(out), err
	}
	return 0, string(out), nil
}

func fileContains(path, s string) bool {
	b, _ := os.ReadFile(path)
	return strings.Contains(string(b), s)
}

// spoolID is the identity of a spool folder, "" when it has none.
func spoolID(dir string) string {
	info, err := spool.ReadIdentity(dir)
	if err != nil {
		return ""
	}
	return info.ID.String()
}

// runSpoolWiped is issue 18 case 1. A third of the load is drained; the
// receiver and the writer are stopped and the spool folder deleted (a
// replaced disk, `rm -rf`, the disk not mounted at boot): both start on a
// new, empty folder, and the writer must drain it from its first record,
// not skip as many records as it had drained of the old one. A third
// more; then the folder is replaced by a copy of itself (`cp -a` to a new
// disk): the receiver must refuse to append to it, with the hint to adopt
// it, and after `meshingest spool identity --adopt` both go on, the writer
// at its own position in that spool. Nothing lost, nothing applied twice.
func runSpoolWiped(ctx context.Context, s *Suite, r *Result) error {
	cfg := s.Config
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 1})
	if err != nil {
		return err
	}
	defer e.Close()
	third := max(int(cfg.Rate*cfg.FaultLoad.Seconds()/3), 100)
	stopBoth := func() error {
		return errors.Join(e.StopWriter(), stopReceiver(e))
	}

	// 1. Drain a third, stop both, wipe the folder, start both.
	if err := e.Pub.Run(ctx, third, cfg.Rate); err != nil {
		return err
	}
	if _, err := e.WaitDrained(ctx, 5*time.Minute, time.Second); err != nil {
		return fmt.Errorf("before the wipe: %w", err)
	}
	oldID := spoolID(e.SpoolDir)
	if err := stopBoth(); err != nil {
		return err
	}
	if err := os.RemoveAll(e.SpoolDir); err != nil {
		return err
	}
	if err := e.StartReceiver(); err != nil {
		return fmt.Errorf("receiver on the wiped folder: %w", err)
	}
	if err := e.Writer.Start(); err != nil {
		return err
	}
	newID := spoolID(e.SpoolDir)
	if err := e.Pub.Run(ctx, third, cfg.Rate); err != nil {
		return err
	}
	if _, err := e.WaitDrained(ctx, 5*time.Minute, time.Second); err != nil {
		return fmt.Errorf("after the wipe: %w", err)
	}
	wx := readStats(e.WriterStats)
	prev := wx.str("meshingest", "spool", "replaced", "previous")
	unwritten := wx.num("meshingest", "spool", "replaced", "unwritten_records")
	warned := fileContains(e.Writer.log, "a new spool replaced the one drained before")
	r.figure("wipe", fmt.Sprintf("%d messages drained from spool %s; receiver and writer stopped (SIGTERM), the folder deleted, both started on a new folder: spool %s; %d more messages",
		third, shortID(oldID), shortID(newID), third))
	r.check("the wiped folder is a new spool (identity)", shortID(newID), "≠ "+shortID(oldID), newID != "" && oldID != "" && newID != oldID)
	r.check("the writer's stats say which spool the new one replaced (meshingest.spool.replaced)", fmt.Sprintf("previous %s, %.0f records unwritten", shortID(prev), unwritten), "previous "+shortID(oldID)+", 0 unwritten", prev == oldID && unwritten == 0)
	r.check("the writer logs the replacement once", fmt.Sprint(warned), "true", warned)

	// 2. Replace the folder by a copy of itself.
	if err := stopBoth(); err != nil {
		return err
	}
	copyDir := e.SpoolDir + ".copy"
	if out, err := exec.Command("cp", "-a", e.SpoolDir, copyDir).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", e.SpoolDir, copyDir, err, out)
	}
	if err := os.RemoveAll(e.SpoolDir); err != nil {
		return err
	}
	if err := os.Rename(copyDir, e.SpoolDir); err != nil {
		return err
	}
	refused, hint := receiverRefusesStart(e)
	r.check("the receiver refuses to append to a copied folder (ErrCopiedSpool), naming `spool identity --adopt`", fmt.Sprintf("refused %v, hint %v", refused, hint), "refused true, hint true", refused && hint)
	code, out, err := runOnce(cfg.Binary, time.Minute, "spool", "identity", "--adopt", "--dir", e.SpoolDir)
	if err != nil || code != 0 {
		return fmt.Errorf("spool identity --adopt: exit %d, %v: %s", code, err, tail([]byte(out), 500))
	}
	if err := e.StartReceiver(); err != nil {
		return fmt.Errorf("receiver on the adopted folder: %w", err)
	}
	if err := e.Writer.Start(); err != nil {
		return err
	}
	adoptedID := spoolID(e.SpoolDir)
	r.check("the adopted copy keeps its identity", shortID(adoptedID), shortID(newID), adoptedID == newID)
	if err := e.Pub.Run(ctx, third, cfg.Rate); err != nil {
		return err
	}
	r.figure("copy", fmt.Sprintf("both stopped, the folder replaced by a `cp -a` copy; the receiver refused it; `meshingest spool identity --adopt`; both started; %d more messages", third))
	if err := s.finish(ctx, e, r, true, true); err != nil {
		return err
	}
	rssChecks(r)
	return nil
}

// runSpoolWipedLive is the running half of issue 18 case 1 (harness
// finding 8): under QoS 1 load the spool folder is deleted while the
// receiver and the writer run, and neither is restarted. The receiver's
// spool must make the folder again as a new spool and go on appending
// there, staying ready; the writer must find its folder replaced, reopen
// it and drain the new spool from its first record, setting nothing
// aside. What the deleted folder held sealed and undrained is gone with
// it (acknowledged, so the broker does not resend it): the loss may be no
// more than the receiver's records_lost_with_folder, and nothing may be
// applied twice.
func runSpoolWipedLive(ctx context.Context, s *Suite, r *Result) error {
	cfg := s.Config
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 1})
	if err != nil {
		return err
	}
	defer e.Close()
	stop := loadInBackground(ctx, e, cfg.Rate, 0)
	sleep(ctx, cfg.FaultLoad/3)
	oldID := spoolID(e.SpoolDir)
	// The writer may write its advisory position into the folder while
	// it is removed: `rm -rf` again, as an operator would.
	wiped := time.Now()
	var rmErr error
	for tries := 0; tries < 50; tries++ {
		if rmErr = os.RemoveAll(e.SpoolDir); rmErr == nil {
			break
		}
		sleep(ctx, 20*time.Millisecond)
	}
	if rmErr != nil {
		stop()
		return rmErr
	}
	// The receiver must be ready again (it need never stop being) and
	// say it remade the folder, within seconds.
	var remade, lostWithFolder float64
	ready := false
	for time.Since(wiped) < 30*time.Second && !(ready && remade > 0) {
		sleep(ctx, 100*time.Millisecond)
		st := readStats(e.ReceiverStats)
		ready, remade, lostWithFolder = st != nil && st["ready"] == true, st.num("spool", "folders_remade"), st.num("spool", "records_lost_with_folder")
	}
	back := time.Since(wiped)
	newID := spoolID(e.SpoolDir)
	r.figure("wipe", fmt.Sprintf("spool %s deleted (`rm -rf`) %s into the load with the receiver and the writer running; neither restarted; the folder was made again as spool %s",
		shortID(oldID), (cfg.FaultLoad/3).Round(time.Second), shortID(newID)))
	r.check("the receiver remade the folder and is ready (spool.folders_remade, ready)", fmt.Sprintf("%.0f remade, ready %v after %s", remade, ready, back.Round(100*time.Millisecond)), "≥ 1, true", remade >= 1 && ready)
	r.check("the remade folder is a new spool (identity)", shortID(newID), "≠ "+shortID(oldID), newID != "" && oldID != "" && newID != oldID)
	sleep(ctx, cfg.FaultLoad*2/3)
	if err := stop(); err != nil {
		return err
	}
	// A writer that does not drain the new spool never writes its
	// position there, so the drain is given two minutes, not fifteen.
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := e.WaitDrained(dctx, 2*time.Minute, time.Second); err != nil {
		r.note("the new spool was not drained: %v", err)
	}
	if st := readStats(e.ReceiverStats); st != nil {
		lostWithFolder = st.num("spool", "records_lost_with_folder")
	}
	reader := readStats(e.WriterStats).obj("meshingest", "spool", "reader")
	replaced := statNum(reader, "folder_replaced")
	warned := fileContains(e.Writer.log, "the spool folder was replaced under the running writer")
	r.figure("the running writer's spool reader", fmt.Sprintf("%.0f records read, %.0f segments (%.0f records) set aside, folder replaced %.0f times", statNum(reader, "records_read"), statNum(reader, "segments_set_aside"), statNum(reader, "records_set_aside"), replaced))
	r.check("the writer reopened the replaced folder (folder_replaced) and logged it", fmt.Sprintf("%.0f, logged %v", replaced, warned), "≥ 1, true", replaced >= 1 && warned)
	r.check("nothing set aside by the writer", fmt.Sprintf("%.0f segments", statNum(reader, "segments_set_aside")), "0", statNum(reader, "segments_set_aside") == 0)
	r.Loss = LossBounded
	if err := s.finish(dctx, e, r, false, true); err != nil {
		return err
	}
	lost := r.Rec.MessagesLost()
	r.check("messages lost ≤ what the deleted folder held undrained (the receiver's records_lost_with_folder)", fmt.Sprintf("%d lost, %.0f held", lost, lostWithFolder), "≤", float64(lost) <= lostWithFolder)
	rssChecks(r)
	return nil
}

// receiverRefusesStart starts a receiver that is expected to exit at once
// and reports whether it did, and whether its log names the way out.
func receiverRefusesStart(e *Env) (refused, hint bool) {
	if err := e.Receiver.Start(); err != nil {
		return false, false
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if exited, _ := e.Receiver.Exited(); exited {
			e.Receiver.Stop(time.Second) // collects the incarnation
			return true, fileContains(e.Receiver.log, "spool identity --adopt")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopReceiver(e)
	return false, false
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	if id == "" {
		return "-"
	}
	return id
}

// runTwoWriters is issue 18 case 2: while the writer drains under load, a
// second `meshingest write` is started three times: with the same
// configuration, with the same database and another spool folder, and with
// the same spool folder and another database. Each must exit at once with
// status 3, naming the lock and the first writer's pid, and the first one
// must go on. Then the first writer is SIGKILLed and a new one must start
// at once: the lock is the kernel's, not a row a crash leaves behind.
func runTwoWriters(ctx context.Context, s *Suite, r *Result) error {
	cfg := s.Config
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 0})
	if err != nil {
		return err
	}
	defer e.Close()
	stop := loadInBackground(ctx, e, cfg.Rate, 0)
	sleep(ctx, cfg.FaultLoad/3)
	first := e.Writer.PID()
	otherSpool, err := variantConfig(e, "other-spool", map[string]any{"spoolDir": filepath.Join(e.Dir, "spool-other")})
	if err != nil {
		stop()
		return err
	}
	otherDB, err := variantConfig(e, "other-db", map[string]any{"dbPath": filepath.Join(e.Dir, "other.db")})
	if err != nil {
		stop()
		return err
	}
	dbLock, spoolLock := e.DBPath+".writer.lock", filepath.Join(e.SpoolDir, "writer.lock")
	// The same configuration meets the spool's lock first (the writer
	// takes it before it opens the database); either lock refuses it.
	attempts := []struct {
		what, config string
		locks        []string
	}{
		{"the same configuration", e.ConfigPath, []string{dbLock, spoolLock}},
		{"the same database, another spool folder", otherSpool, []string{dbLock}},
		{"the same spool folder, another database", otherDB, []string{spoolLock}},
	}
	var lines []string
	refused := 0
	for _, a := range attempts {
		start := time.Now()
		code, out, err := runOnce(cfg.Binary, time.Minute, "write", "--config", a.config)
		took := time.Since(start)
		named := strings.Contains(out, strconv.Itoa(first)) && slices.ContainsFunc(a.locks, func(l string) bool { return strings.Contains(out, l) })
		if err == nil && code == 3 && named {
			refused++
		}
		lines = append(lines, fmt.Sprintf("%s: exit %d after %s, names the lock and pid %d: %v", a.what, code, took.Round(10*time.Millisecond), first, named))
		os.WriteFile(filepath.Join(e.Dir, fmt.Sprintf("second-writer-%d.log", len(lines))), []byte(out), 0o600)
	}
	r.figure("second writers", strings.Join(lines, "; "))
	r.check("second writers refused (exit 3, naming the lock file and the first writer's pid)", fmt.Sprintf("%d of %d", refused, len(attempts)), fmt.Sprintf("%d of %d", len(attempts), len(attempts)), refused == len(attempts))
	before := readStats(e.WriterStats).str("sampledAt")
	sleep(ctx, 2*time.Second)
	goesOn := e.Writer.PID() == first && readStats(e.WriterStats).str("sampledAt") != before
	r.check("the first writer goes on (same pid, stats file still rewritten)", fmt.Sprint(goesOn), "true", goesOn)

	// A SIGKILL leaves no lock behind.
	if err := e.KillWriter(); err != nil {
		stop()
		return err
	}
	sleep(ctx, 3*time.Second)
	exited, how := e.Writer.Exited()
	r.check("a writer started right after a SIGKILL of the first runs", map[bool]string{true: "exited: " + how, false: "running"}[exited], "running", !exited && e.Writer.PID() != 0)
	sleep(ctx, cfg.FaultLoad/3)
	if err := stop(); err != nil {
		return err
	}
	// The SIGKILLed writer took its last second of drop counters with it.
	if err := s.finish(ctx, e, r, true, false); err != nil {
		return err
	}
	rssChecks(r)
	return nil
}

// variantConfig writes a copy of the environment's configuration with
// some keys changed and its own writer stats file.
func variantConfig(e *Env, name string, set map[string]any) (string, error) {
	b, err := os.ReadFile(e.ConfigPath)
	if err != nil {
		return "", err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "", err
	}
	for k, v := range set {
		cfg[k] = v
	}
	cfg["writer"] = map[string]any{"statsFile": filepath.Join(e.Dir, "writer-stats-"+name+".json")}
	path := filepath.Join(e.Dir, "config-"+name+".json")
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, out, 0o600)
}

// runSegmentsSwapped is issue 18 case 4 and the segment half of case 1.
// With the writer stopped, the spool gets sealed segments; two of them
// swap names (the reader must notice the Seqs out of place, set aside what
// it cannot place and count it, never delete it unread), a segment of
// another spool holding copies of messages already published is placed
// among them (set aside: its records would be counted twice), and a copy
// of the folder is kept. Then the writer drains; afterwards the copy's
// segments, drained and released by now, are copied back in (a backup
// restored over the spool): none may be applied again.
func runSegmentsSwapped(ctx context.Context, s *Suite, r *Result) error {
	cfg := s.Config
	// The scenario plants a foreign segment between two sealed ones, so it
	// needs gaps between their ids: at the low-latency profile every group
	// is a segment of its own and consecutive ids leave none.
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 0, NoWriter: true, Spool: map[string]any{"profile": "low-wear"}})
	if err != nil {
		return err
	}
	defer e.Close()
	n := max(int(cfg.Rate*cfg.FaultLoad.Seconds()/2), 1000)
	if err := e.Pub.Run(ctx, n, cfg.Rate); err != nil {
		return err
	}
	sleep(ctx, 3*time.Second) // the active segment seals after a second
	segs, _ := filepath.Glob(filepath.Join(e.SpoolDir, "*.seg"))
	slices.Sort(segs)
	if len(segs) < 4 {
		return fmt.Errorf("only %d sealed segments in %s; need 4", len(segs), e.SpoolDir)
	}
	backup := filepath.Join(e.Dir, "spool-backup")
	if out, err := exec.Command("cp", "-a", e.SpoolDir, backup).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a: %v: %s", err, out)
	}
	a, b := segs[1], segs[2]
	if err := swapFiles(a, b); err != nil {
		return err
	}
	foreign, foreignRecords, err := foreignSegment(e, s.Config.Seed, segmentID(segs[0]), segmentID(segs[1]))
	if err != nil {
		return err
	}
	// The backup was taken before the swap: the file now named a holds
	// the records of the backup's b, and the other way round.
	backupRecords, err := recordsBySegment(backup)
	if err != nil {
		return err
	}
	recordsAt := map[uint64]int{segmentID(a): backupRecords[segmentID(b)], segmentID(b): backupRecords[segmentID(a)]}
	r.figure("segments", fmt.Sprintf("%d sealed segments of %d records; %s and %s swapped; %s, a segment of another spool holding %d of the messages already published, placed between the first two",
		len(segs), n, filepath.Base(a), filepath.Base(b), filepath.Base(foreign), foreignRecords))
	if err := e.Writer.Start(); err != nil {
		return err
	}
	if err := e.Pub.Run(ctx, n/2, cfg.Rate); err != nil {
		return err
	}
	if _, err := e.WaitDrained(ctx, 5*time.Minute, time.Second); err != nil {
		return fmt.Errorf("first drain: %w", err)
	}

	// The backup restored over the drained spool: the segments that were
	// applied and released (not the swapped pair, set aside unapplied).
	aID, bID, fID := segmentID(a), segmentID(b), segmentID(foreign)
	restored := map[uint64]bool{}
	backed, _ := filepath.Glob(filepath.Join(backup, "*.seg"))
	for _, src := range backed {
		id := segmentID(src)
		dst := filepath.Join(e.SpoolDir, filepath.Base(src))
		if id == aID || id == bID {
			continue
		}
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := copyFile(src, dst); err != nil {
			return err
		}
		restored[id] = true
	}
	r.figure("backup restored", fmt.Sprintf("after the drain, the %d segments of a copy taken before it that had been applied and released since, copied back into the spool", len(restored)))
	if err := e.Pub.Run(ctx, n/2, cfg.Rate); err != nil {
		return err
	}
	if _, err := e.WaitDrained(ctx, 5*time.Minute, time.Second); err != nil {
		return fmt.Errorf("second drain: %w", err)
	}
	reader := readStats(e.WriterStats).obj("meshingest", "spool", "reader")
	setAsideSegs, setAsideRecs := statNum(reader, "segments_set_aside"), statNum(reader, "records_set_aside")

	// What was set aside, by quarantine item: the swapped pair's records
	// are the loss the accounting must find, nothing else.
	items, _ := spool.ListQuarantine(e.SpoolDir)
	swappedLoss, foreignSetAside, backupSetAside, backupSetAsideRecs, segItems := 0, false, 0, 0, 0
	for _, it := range items {
		if it.Kind != "segment" {
			continue
		}
		segItems++
		switch {
		case it.Segment == aID || it.Segment == bID:
			swappedLoss += recordsAt[it.Segment]
		case it.Segment == fID:
			foreignSetAside = it.Reason != ""
		case restored[it.Segment]:
			backupSetAside++
			backupSetAsideRecs += backupRecords[it.Segment]
		default:
			r.note("quarantine item %s (segment %d) is none of the planted ones: %s", it.Name, it.Segment, it.Reason)
		}
	}
	left := 0
	for id := range restored {
		if _, err := os.Stat(filepath.Join(e.SpoolDir, filepath.Base(segmentPath(backup, id)))); err == nil {
			left++
		}
	}
	wantRecs := swappedLoss + foreignRecords + backupSetAsideRecs
	r.figure("set aside (the writer's stats file, meshingest.spool.reader)", fmt.Sprintf("%.0f segments, %.0f records; quarantine/: %d segments", setAsideSegs, setAsideRecs, segItems))
	r.figure("restored backup segments", fmt.Sprintf("%d of %d set aside (%d records), %d released unread (every record at or before the position), %d still in the folder", backupSetAside, len(restored), backupSetAsideRecs, len(restored)-backupSetAside-left, left))
	r.check("the segment of another spool set aside, with its reason", fmt.Sprint(foreignSetAside), "true", foreignSetAside)
	r.check("swapped segments set aside as out of place", fmt.Sprintf("%d records", swappedLoss), "> 0", swappedLoss > 0)
	r.check("set-aside segments and records counted in the stats file", fmt.Sprintf("%.0f segments, %.0f records", setAsideSegs, setAsideRecs), fmt.Sprintf("%d segments, %d records (quarantine/)", segItems, wantRecs),
		int(setAsideSegs) == segItems && int(setAsideRecs) == wantRecs)
	r.Loss = LossCounted
	r.CountedLoss = swappedLoss
	if err := s.finish(ctx, e, r, false, true); err != nil {
		return err
	}
	rssChecks(r)
	return nil
}

func statNum(m map[string]any, k string) float64 {
	f, _ := m[k].(float64)
	return f
}

func segmentID(path string) uint64 {
	id, _ := strconv.ParseUint(strings.TrimSuffix(filepath.Base(path), ".seg"), 10, 64)
	return id
}

// segmentPath is the sealed segment id's file in dir (the spool's naming:
// 20 digits).
func segmentPath(dir string, id uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d.seg", id))
}

// recordsBySegment is each sealed segment's record count, by its name.
func recordsBySegment(dir string) (map[uint64]int, error) {
	v, err := spool.Verify(dir)
	if err != nil {
		return nil, err
	}
	out := map[uint64]int{}
	for _, sc := range v.Segments {
		out[sc.ID] = int(sc.Records)
	}
	return out, nil
}

func swapFiles(a, b string) error {
	tmp := a + ".swap"
	return errors.Join(os.Rename(a, tmp), os.Rename(b, a), os.Rename(tmp, b))
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// foreignSegment makes a spool of its own holding the first messages of
// the same stream (already published: applying them would count them
// twice) and copies its sealed segment into the environment's spool,
// named to sort between the segments lo and hi.
func foreignSegment(e *Env, seed uint64, lo, hi uint64) (string, int, error) {
	if hi-lo < 2 {
		return "", 0, fmt.Errorf("no free segment name between %d and %d", lo, hi)
	}
	dir := filepath.Join(e.Dir, "spool-foreign")
	// One sealed segment for all its records: the low-wear profile's
	// groups share an active segment (low-latency seals every group).
	a, err := spool.OpenAppender(dir, spool.Options{Profile: spool.ProfileLowWear})
	if err != nil {
		return "", 0, err
	}
	gen := loadgen.New(loadgen.Options{Seed: seed})
	const n = 200
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		m := gen.Next()
		if err := a.Append(spool.Record{ReceivedAt: time.Now().UTC(), Source: "load", Topic: m.Topic, Payload: m.Payload}, func(err error) { errs <- err }); err != nil {
			a.Close()
			return "", 0, err
		}
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			a.Close()
			return "", 0, err
		}
	}
	if err := a.Close(); err != nil {
		return "", 0, err
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		return "", 0, fmt.Errorf("the foreign spool %s has %d sealed segments, want 1", dir, len(segs))
	}
	dst := segmentPath(e.SpoolDir, (lo+hi)/2)
	return dst, n, copyFile(segs[0], dst)
}

// runHugePublish is issue 18 case 6: under the usual load (QoS 1), a raw
// MQTT client streams publishes far over spool.maxPayloadBytes at QoS 0
// and 1 to a topic the receiver subscribes to. The receiver must stay
// connected and within its memory bound, count each one as an oversized
// drop, acknowledge the QoS 1 ones (else the broker resends them), and
// store every small message around them.
func runHugePublish(ctx context.Context, s *Suite, r *Result) error {
	cfg := s.Config
	if len(cfg.HugePublishes) == 0 {
		return errors.New("huge-publish: Config.HugePublishes is empty (FullConfig and ShortConfig set it)")
	}
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 1})
	if err != nil {
		return err
	}
	defer e.Close()
	stop := loadInBackground(ctx, e, cfg.Rate, 0)
	sleep(ctx, 2*time.Second)
	rx := readStats(e.ReceiverStats)
	connects, disconnects := sourceCounts(rx)
	raw, err := testkit.DialRawPublisher("127.0.0.1:"+strconv.Itoa(e.Broker.Port), "harness-huge")
	if err != nil {
		stop()
		return err
	}
	defer raw.Close()
	var total int64
	var sizes []string
	start := time.Now()
	for _, h := range cfg.HugePublishes {
		if err := raw.Publish("meshcore/HUGE/HUGEPUBLISHER/packets", h.QoS, h.Bytes); err != nil {
			stop()
			return err
		}
		total += int64(h.Bytes)
		sizes = append(sizes, fmt.Sprintf("%s at QoS %d", mibs(int64(h.Bytes)), h.QoS))
	}
	want := int64(len(cfg.HugePublishes))
	var counted int64
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); {
		if counted = receiverDrops(readStats(e.ReceiverStats))["oversized"]; counted >= want {
			break
		}
		sleep(ctx, 100*time.Millisecond)
	}
	took := time.Since(start)
	sleep(ctx, 2*time.Second) // small messages after the last huge one
	if err := stop(); err != nil {
		return err
	}
	rx = readStats(e.ReceiverStats)
	connects2, disconnects2 := sourceCounts(rx)
	r.figure("huge publishes", fmt.Sprintf("%s (%s in all) streamed by a raw MQTT client in %s, among %.0f msg/s of small ones at QoS 1; spool.maxPayloadBytes %d KiB (the default)",
		strings.Join(sizes, ", "), mibs(total), took.Round(100*time.Millisecond), cfg.Rate, spool.DefaultMaxPayloadBytes>>10))
	r.check("huge publishes counted as oversized drops", fmt.Sprint(counted), fmt.Sprint(want), counted == want)
	r.check("the receiver stayed connected (connects, disconnects during the publishes)", fmt.Sprintf("%.0f, %.0f", connects2-connects, disconnects2-disconnects), "0, 0", connects2 == connects && disconnects2 == disconnects)
	if err := s.finish(ctx, e, r, true, true); err != nil {
		return err
	}
	// finish read the counters again after the drain: a QoS 1 publish the
	// receiver had not acknowledged would have come back by now.
	r.check("oversized drops after the drain (no QoS 1 resend)", fmt.Sprint(r.ReceiverDrops["oversized"]), fmt.Sprint(want), r.ReceiverDrops["oversized"] == want)
	r.check("receiver peak RSS (VmHWM) with the huge publishes", mibs(r.ReceiverCost.HWMBytes), fmt.Sprintf("≤ %s (64 MiB + 8 × maxPayloadBytes)", mibs(hugeRSSLimit)),
		r.ReceiverCost.HWMBytes > 0 && r.ReceiverCost.HWMBytes <= hugeRSSLimit)
	r.check("writer peak RSS (VmHWM)", mibs(r.WriterCost.HWMBytes), "≤ 64 MiB", r.WriterCost.HWMBytes > 0 && r.WriterCost.HWMBytes <= rssLimit)
	return nil
}

func sourceCounts(s stats) (connects, disconnects float64) {
	list, _ := s["source_statuses"].([]any)
	for _, v := range list {
		m, _ := v.(map[string]any)
		c, _ := m["connectCount"].(float64)
		d, _ := m["disconnectCount"].(float64)
		connects += c
		disconnects += d
	}
	return connects, disconnects
}

// runRetainedReplay is issue 18 case 7: some packet messages of the load
// are published with the retain flag; the broker replays the last one of
// each topic at every new subscription, so each receiver restart brings
// them back. The first delivery counts; a replay changes nothing: every
// observer's packet_count and last_seen stay as they were before the
// restarts, and each replay is counted as a retained_replay drop.
func runRetainedReplay(ctx context.Context, s *Suite, r *Result) error {
	cfg := s.Config
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 0})
	if err != nil {
		return err
	}
	defer e.Close()
	n := max(int(cfg.Rate*cfg.FaultLoad.Seconds()/2), 500)
	topics := map[string]bool{}
	retained := 0
	// Every tenth message is retained when it is a stored packet message
	// (about one in ten of those); the rest are published as usual.
	for i := 0; i < n; i++ {
		m := e.Gen.Next()
		retain := m.Stored() && strings.HasSuffix(m.Topic, "/packets") && i%10 == 0
		if err := e.Pub.publishRetained(m, retain); err != nil {
			return err
		}
		if retain {
			retained++
			topics[m.Topic] = true
		}
		if i%50 == 49 {
			sleep(ctx, time.Duration(50/cfg.Rate*float64(time.Second)))
		}
	}
	if _, err := e.WaitDrained(ctx, 5*time.Minute, time.Second); err != nil {
		return err
	}
	before, err := observerRows(e.DBPath)
	if err != nil {
		return err
	}
	const restarts = 3
	for i := 0; i < restarts; i++ {
		sleep(ctx, 1100*time.Millisecond) // a later second: a moved last_seen would show
		if err := stopReceiver(e); err != nil {
			return err
		}
		if err := e.StartReceiver(); err != nil {
			return err
		}
	}
	if _, err := e.WaitDrained(ctx, 5*time.Minute, time.Second); err != nil {
		return err
	}
	after, err := observerRows(e.DBPath)
	if err != nil {
		return err
	}
	changed := 0
	for k, v := range after {
		if before[k] != v {
			changed++
			if changed <= 3 {
				r.note("observer %s: %s before the restarts, %s after", k, before[k], v)
			}
		}
	}
	replays := int(e.WriterDrops()["retained_replay"])
	want := len(topics) * restarts
	r.figure("retained", fmt.Sprintf("%d of %d messages published with the retain flag, on %d topics; the receiver restarted %d times (SIGTERM), each time subscribing again", retained, n, len(topics), restarts))
	r.check("observers whose packet_count or last_seen moved with the replays", fmt.Sprintf("%d of %d", changed, len(after)), "0", changed == 0 && len(after) > 0)
	r.check("replays counted as retained_replay", fmt.Sprint(replays), fmt.Sprintf("%d (%d topics × %d subscriptions)", want, len(topics), restarts), replays == want)
	if err := s.finish(ctx, e, r, true, true); err != nil {
		return err
	}
	rssChecks(r)
	return nil
}

// observerRows is each observer's packet_count and last_seen.
func observerRows(path string) (map[string]string, error) {
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, packet_count, last_seen FROM observers`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id string
		var count, last sql.NullString
		if err := rows.Scan(&id, &count, &last); err != nil {
			return nil, err
		}
		out[id] = fmt.Sprintf("packet_count %s, last_seen %s", count.String, last.String)
	}
	return out, rows.Err()
}

// publishRetained publishes m at QoS 1, with the retain flag if asked, and
// waits for the broker's acknowledgement, recording its publish time like
// publish does.
func (p *Publisher) publishRetained(m loadgen.Message, retain bool) error {
	p.notePublished(m)
	tok := p.client.Publish(m.Topic, 1, retain, m.Payload)
	if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
		return fmt.Errorf("publisher: message %d: %v", m.Seq, tok.Error())
	}
	p.published.Add(1)
	return nil
}
