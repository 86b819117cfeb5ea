package copies

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshingest/meshingest/spool"
)

// copyInput is a record and the spool it came from.
type copyInput struct {
	sp    spool.Identity
	rec   spool.Record
	since time.Time // when its receiver's subscription began
}

// admitAll runs recs (each with the spool it came from) through one batch's
// view of m and returns which were applied.
func admitAll(t *testing.T, m *Memory, recs []copyInput) []bool {
	t.Helper()
	c := m.View(5*time.Second, 15*time.Minute, nil)
	var out []bool
	var stream time.Time // the newest receive time before each record, as the drain loop keeps it
	for _, r := range recs {
		apply, _ := c.Admit(&r.rec, Identity(&r.rec), r.sp, r.since, stream)
		out = append(out, apply)
		if r.rec.ReceivedAt.After(stream) {
			stream = r.rec.ReceivedAt
		}
	}
	c.Commit(Row{}, 0, 0)
	return out
}

func TestView_Admit_MaximumOverReceivers(t *testing.T) {
	a, b := spool.Identity{1}, spool.Identity{2}
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	pub := func(sp spool.Identity, at time.Duration, payload string) copyInput {
		return copyInput{sp: sp, rec: spool.Record{ReceivedAt: t0.Add(at), Topic: "meshcore/SJC/x/packets", Payload: []byte(payload)}}
	}
	ms := time.Millisecond
	restarted := func(in copyInput, at time.Duration) copyInput {
		in.since = t0.Add(at)
		return in
	}
	for _, c := range []struct {
		name string
		recs []copyInput
		want []bool
	}{
		{"both hear it", []copyInput{pub(a, 0, "p"), pub(b, 2*ms, "p")}, []bool{true, false}},
		// An observer publishes the same bytes twice: both receivers hear
		// both, it counts twice, not four times.
		{"deliberate pair", []copyInput{pub(a, 0, "p"), pub(a, 300*ms, "p"), pub(b, 2*ms, "p"), pub(b, 302*ms, "p")}, []bool{true, true, false, false}},
		// a missed the second copy: b supplies it.
		{"second copy from the other receiver", []copyInput{pub(a, 0, "p"), pub(b, 2*ms, "p"), pub(b, 302*ms, "p")}, []bool{true, false, true}},
		// The same bytes a minute later are a new publication.
		{"published again after the window", []copyInput{pub(a, 0, "p"), pub(b, 2*ms, "p"), pub(a, time.Minute, "p"), pub(b, time.Minute+2*ms, "p")}, []bool{true, false, true, false}},
		// b froze and reads what the broker buffered for it 40 s late,
		// stamped with that time: still a's publication.
		{"copy buffered for a frozen receiver", []copyInput{pub(a, 0, "p"), pub(a, time.Second, "q"), pub(b, 40*time.Second, "p"), pub(b, 40*time.Second+ms, "q")}, []bool{true, true, false, false}},
		// b was down (restarted at 30 s) when "p" was first published; the
		// same bytes again at 40 s, heard only by b (a is down now), are a
		// second publication.
		{"same bytes again, heard by a restarted receiver", []copyInput{pub(a, 0, "p"), restarted(pub(b, 40*time.Second, "p"), 30*time.Second)}, []bool{true, true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := admitAll(t, NewMemory(nil), c.recs)
			for i := range c.want {
				if got[i] != c.want[i] {
					t.Errorf("copy %d applied %v, want %v (all: %v)", i, got[i], c.want[i], got)
				}
			}
		})
	}
}

func TestRounds_Encode_DecodesBack(t *testing.T) {
	in := map[Ref]Round{
		{bucket: 29579967, key: 0xdeadbeef}: {off: 45123, applied: 2, counts: [MaxSpools]uint8{2, 1}},
		{bucket: -1, key: 1}:                {off: 59900, applied: 1, counts: [MaxSpools]uint8{0, 0, 1}},
	}
	blob, tMax := Encode(in)
	if tMax != 29579967*bucketMs+45123 {
		t.Errorf("tMax %d", tMax)
	}
	out := map[Ref]Round{}
	if err := Decode(blob, func(ref Ref, r Round) { out[ref] = r }); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("decoded %d rounds, want %d", len(out), len(in))
	}
	for k, v := range in {
		if out[k] != v {
			t.Errorf("round %+v: got %+v, want %+v", k, out[k], v)
		}
	}
	if err := Decode(blob[:len(blob)-1], func(Ref, Round) {}); err == nil {
		t.Error("a truncated list decoded without error")
	}
}

func TestView_Ordinal_ReusesASpoolNoLongerDrained(t *testing.T) {
	m := NewMemory(nil)
	for i := range MaxSpools {
		m.spools = append(m.spools, spool.Identity{byte(i + 1)})
	}
	next := spool.Identity{99}
	c := m.View(DefaultWindow, DefaultMemory, []spool.Identity{m.spools[0], m.spools[2], m.spools[3], m.spools[4], next})
	if got := c.ordinal(next); got != 1 {
		t.Fatalf("ordinal %d, want 1 (the one spool no longer drained)", got)
	}
	if got := c.ordinal(next); got != 1 {
		t.Fatalf("second ask: ordinal %d, want 1", got)
	}
	c.Commit(Row{}, 0, 0)
	if m.spools[1] != next || len(m.spools) != MaxSpools {
		t.Errorf("committed spools %v, want %v at 1", m.spools, next)
	}
}

// In the window, with records in receive order as the merge gives them,
// the pipeline's guess is admit's decision: a copy is never decoded, an
// applied record always is.
func TestGuess_Note_AgreesWithAdmitInTheWindow(t *testing.T) {
	a, b := spool.Identity{1}, spool.Identity{2}
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	pub := func(sp spool.Identity, at time.Duration, payload string) copyInput {
		return copyInput{sp: sp, rec: spool.Record{ReceivedAt: t0.Add(at), Topic: "meshcore/SJC/x/packets", Payload: []byte(payload)}}
	}
	ms := time.Millisecond
	for name, recs := range map[string][]copyInput{
		"both hear it":        {pub(a, 0, "p"), pub(b, 2*ms, "p")},
		"deliberate pair":     {pub(a, 0, "p"), pub(b, 2*ms, "p"), pub(a, 300*ms, "p"), pub(b, 302*ms, "p")},
		"second copy from b":  {pub(a, 0, "p"), pub(b, 2*ms, "p"), pub(b, 302*ms, "p")},
		"b first, then a":     {pub(b, 0, "p"), pub(a, ms, "p"), pub(a, 2*ms, "q"), pub(b, 3*ms, "q")},
		"again after windows": {pub(a, 0, "p"), pub(b, 2*ms, "p"), pub(a, 11*time.Second, "p"), pub(b, 11*time.Second+2*ms, "p")},
		"one receiver only":   {pub(a, 0, "p"), pub(a, ms, "p"), pub(a, 2*ms, "q")},
	} {
		t.Run(name, func(t *testing.T) {
			want := admitAll(t, NewMemory(nil), recs)
			g := NewGuess(5 * time.Second)
			for i, r := range recs {
				key, copy := g.Note(&r.rec, r.sp)
				if key != Identity(&r.rec) {
					t.Fatalf("record %d: identity %x, want %x", i, key, Identity(&r.rec))
				}
				if copy == want[i] {
					t.Errorf("record %d: guessed a copy %v, admit applies it %v", i, copy, want[i])
				}
			}
		})
	}
}

// The guess holds two windows of receive time at most, whatever the
// backlog.
func TestGuess_Note_BoundedToTwoWindows(t *testing.T) {
	g := NewGuess(5 * time.Second)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	for i := range 100_000 {
		r := spool.Record{ReceivedAt: t0.Add(time.Duration(i) * 4 * time.Millisecond), Topic: "t", Payload: []byte(fmt.Sprint(i))}
		g.Note(&r, spool.Identity{byte(1 + i%2)})
	}
	if n := len(g.cur) + len(g.prev); n > 2*5000/4+2 {
		t.Fatalf("%d rounds held, want at most two windows' (%d)", n, 2*5000/4+2)
	}
}

// The identity and the rounds are stored (meshingest_copies): a writer of
// another version must read what this one wrote. The expected values are
// computed outside Go: the first 8 bytes of SHA-256("<topic>\x00<payload>")
// little-endian, and the documented layout of Encode.
func TestIdentity_StoredForm_Unchanged(t *testing.T) {
	rec := spool.Record{Topic: "meshcore/SJC/x/packets", Payload: []byte(`{"raw":"11"}`)}
	if got := Identity(&rec); got != 0x4fbb77275486d219 {
		t.Errorf("identity %#x, want 0x4fbb77275486d219", got)
	}
	blob, _ := Encode(map[Ref]Round{{bucket: 29579967, key: 0xdeadbeef}: {off: 45123, applied: 2, counts: [MaxSpools]uint8{2, 1}}})
	if got, want := fmt.Sprintf("%x", blob), "feea9a1cefbeadde00000000c6b7aaa3a767020201000000"; got != want {
		t.Errorf("encoded %s, want %s", got, want)
	}
}
