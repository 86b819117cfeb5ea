package harness

import (
	"fmt"
	"time"
)

// Criterion is one pass/fail check of a scenario.
type Criterion struct {
	Name, Measured, Limit string
	Pass                  bool
	// Timing marks a limit on how fast something happened (a latency, a
	// catch-up, a reconnect). It is part of the verdict of a harness run,
	// which owns its machine; the go test of the short runs only logs it,
	// since a shared, loaded machine makes any such bound a coin toss.
	Timing bool
}

// LossMode says what a scenario promises about loss.
type LossMode int

const (
	// LossNone: nothing may be lost.
	LossNone LossMode = iota
	// LossCounted: what is lost must equal what the system counted as
	// dropped (CountedLoss), with a reason.
	LossCounted
	// LossBounded: loss is allowed within a bound the scenario checks
	// itself (QoS 0 crashes: the group window).
	LossBounded
)

// Result is one scenario's outcome.
type Result struct {
	Name, Description string
	Err               string
	Criteria          []Criterion
	Figures           [][2]string
	Notes             []string

	Loss        LossMode
	CountedLoss int

	Rec      *Reconciliation
	Diff     []TableDiff
	Compared bool
	Messages int
	Timeline []Sample
	// PublishLag is the harness-measured lag at each Timeline sample.
	PublishLag    []float64
	Started       time.Time
	ReceiverCost  ProcSample
	WriterCost    ProcSample
	ReceiverDrops map[string]int64
	// ReceiverDups are QoS 1 redeliveries (DUP flag) the receiver spooled.
	ReceiverDups int64
	Duration     time.Duration
	Dir          string
	Pass         bool
}

func (r *Result) check(name, measured, limit string, pass bool) {
	r.Criteria = append(r.Criteria, Criterion{Name: name, Measured: measured, Limit: limit, Pass: pass})
}

// checkTiming is check for a limit on elapsed time (Criterion.Timing).
func (r *Result) checkTiming(name, measured, limit string, pass bool) {
	r.Criteria = append(r.Criteria, Criterion{Name: name, Measured: measured, Limit: limit, Pass: pass, Timing: true})
}

func (r *Result) figure(name, value string) { r.Figures = append(r.Figures, [2]string{name, value}) }

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// settle adds the accounting criteria every scenario shares and decides
// the verdict.
func (r *Result) settle() {
	if rec := r.Rec; rec != nil {
		switch r.Loss {
		case LossNone:
			r.check("lost (messages, observation rows, advert counts)", fmt.Sprintf("%d, %d, %d", rec.MessagesLost(), rec.LostObservations, rec.AdvertCountLost), "0", rec.Lost() == 0)
		case LossCounted:
			r.check("messages lost = messages counted as dropped", fmt.Sprintf("%d lost, %d counted", rec.MessagesLost(), r.CountedLoss), "equal", rec.MessagesLost() == r.CountedLoss)
		}
		r.check("double-counted (packet_count, advert_count, extra observation rows, extra dropped rows)",
			fmt.Sprintf("%d, %d, %d, %d", rec.PacketCountDoubled, rec.AdvertCountDoubled, rec.ExtraObservations, max(rec.DroppedRowsFound-rec.DroppedRowsExpected, 0)),
			"0", rec.Doubled() == 0)
		r.check("observations with NULL observer_idx", fmt.Sprint(rec.NullObserverIdx), "0", rec.NullObserverIdx == 0)
		r.check("rows whose parent is missing (foreign_key_check)", fmt.Sprint(rec.Orphans), "0", rec.Orphans == 0)
	}
	if r.Compared {
		differ := 0
		for _, d := range r.Diff {
			if !d.Equal() {
				differ++
			}
		}
		r.check("tables equal to an undisturbed run's", fmt.Sprintf("%d of %d tables differ", differ, len(r.Diff)), "0 differ", differ == 0)
	}
	r.Pass = r.Err == "" && len(r.Criteria) > 0
	for _, c := range r.Criteria {
		r.Pass = r.Pass && c.Pass
	}
}

// Verdict is PASS, FAIL or ERROR.
func (r *Result) Verdict() string {
	switch {
	case r.Err != "":
		return "ERROR"
	case r.Pass:
		return "PASS"
	}
	return "FAIL"
}
