package spool

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Waiting for a sealed segment is event-driven: the Reader watches the
// spool folder (inotify, through fsnotify) and wakes when a name ending in
// .seg appears there, which is what the appender's seal rename does. The
// folder is still listed on a poll whose interval doubles from
// ReaderOptions.PollInterval up to PollMaxInterval while nothing comes:
// the poll covers what a watch cannot see (an event queue overflow, the
// folder replaced under its name, no inotify at all), and the back-off
// keeps an idle reader from listing the folder 20 times a second. The
// library is used rather than raw inotify because it owns the event
// parsing, the IN_IGNORED and overflow cases and the wake-up on Close.

// Poll defaults: the first poll comes at the seal age's scale; an idle
// reader backs off to a second while it is woken by events, and to a fifth
// of one when it cannot watch (polling is then all it has).
const (
	defaultPollInterval        = 50 * time.Millisecond
	defaultPollMaxInterval     = time.Second
	defaultPollMaxUnwatched    = 200 * time.Millisecond
	sealedEventBuffer          = 1
	watchRetryAfterFailedWatch = 10 // polls between two tries to watch again
)

// watcher is the Reader's watch on its folder. The fsnotify goroutine only
// signals sealed; everything else is the caller's, under Reader.mu.
type watcher struct {
	fs       *fsnotify.Watcher // nil when inotify could not be had
	watching bool              // the folder itself is watched now
	retryIn  int               // polls until the next try to watch
	sealed   chan struct{}     // a .seg appeared, or events may have been lost
	poll     time.Duration     // the next poll interval (the back-off)
}

// startWatchLocked makes sure the folder is watched, if it can be; it is
// cheap when it already is. r.mu must be held.
func (r *Reader) startWatchLocked() {
	w := &r.watch
	if w.sealed == nil {
		w.sealed = make(chan struct{}, sealedEventBuffer)
	}
	if w.watching || r.closed {
		return
	}
	if w.retryIn > 0 {
		w.retryIn--
		return
	}
	if w.fs == nil {
		fw, err := fsnotify.NewWatcher()
		if err != nil {
			w.retryIn = watchRetryAfterFailedWatch
			return
		}
		w.fs = fw
		go r.forwardEvents(fw, w.sealed)
	}
	if err := w.fs.Add(r.dir); err != nil {
		w.retryIn = watchRetryAfterFailedWatch
		return
	}
	w.watching = true
}

// forwardEvents turns the watcher's events into wake-ups.
func (r *Reader) forwardEvents(fw *fsnotify.Watcher, sealed chan<- struct{}) {
	wake := func() {
		select {
		case sealed <- struct{}{}:
		default:
		}
	}
	for {
		select {
		case ev, ok := <-fw.Events:
			if !ok {
				return
			}
			switch {
			case filepath.Clean(ev.Name) == filepath.Clean(r.dir) && ev.Has(fsnotify.Remove|fsnotify.Rename):
				// The folder itself went away: the watch died with it.
				r.mu.Lock()
				r.watch.watching = false
				r.mu.Unlock()
				wake()
			case ev.Has(fsnotify.Create) && strings.HasSuffix(ev.Name, sealedExt):
				wake()
			}
		case _, ok := <-fw.Errors:
			if !ok {
				return
			}
			wake() // an overflow lost events: list the folder
		}
	}
}

// nextPollLocked returns how long to wait before listing the folder again
// and doubles the interval for the time after, up to its bound.
func (r *Reader) nextPollLocked() time.Duration {
	w := &r.watch
	limit := r.opts.PollMaxInterval
	if !w.watching {
		limit = min(limit, max(r.opts.PollInterval, defaultPollMaxUnwatched))
	}
	if w.poll <= 0 {
		w.poll = r.opts.PollInterval
	}
	d := min(w.poll, limit)
	w.poll = min(2*w.poll, limit)
	return d
}

// WaitSealed returns when a sealed segment newer than the newest one this
// reader has listed appears, or when ctx ends. It wakes on the folder
// watch's event for the new name, and lists the folder on a backing-off
// poll besides (see above).
func (r *Reader) WaitSealed(ctx context.Context) error {
	for {
		r.mu.Lock()
		r.startWatchLocked()
		sealed := r.watch.sealed
		r.mu.Unlock()
		// A replaced folder never seals anything newer for this reader.
		if err := r.checkReplaced(); errors.Is(err, ErrSpoolReplaced) {
			return err
		}
		segs, err := r.listSealed()
		if err != nil {
			return err
		}
		r.mu.Lock()
		newer := len(segs) > 0 && segs[len(segs)-1].ID > r.seen
		if newer {
			r.watch.poll = 0 // traffic: poll briskly again after the next idle spell
		}
		wait := r.nextPollLocked()
		r.mu.Unlock()
		if newer {
			r.noteListed(segs)
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-sealed:
		case <-t.C:
		}
		t.Stop()
	}
}

// Close stops the folder watch. The Reader's cursors stay usable; a later
// WaitSealed polls only.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.watch.watching = false
	if r.watch.fs != nil {
		err := r.watch.fs.Close()
		r.watch.fs = nil
		return err
	}
	return nil
}
