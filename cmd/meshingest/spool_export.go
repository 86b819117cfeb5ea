package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/spool"
)

// spoolExport writes the sealed records as capture JSONL to stdout.
func spoolExport(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("export", "export [--dir DIR | --config FILE] [--pending] > FILE.jsonl", stderr, false)
	pending := f.fs.Bool("pending", false, "only the records the writer has not drained yet")
	if code := f.parse(args); code >= 0 {
		return code
	}
	var pos spool.Position
	if *pending {
		pos, _ = spool.ReadWriterPosition(f.dir)
	}
	damaged := 0
	r, err := openInspectReader(f, func(e spool.QuarantineEvent) {
		damaged++
		fmt.Fprintf(stderr, "meshingest spool export: damaged %s\n", e)
	})
	if err != nil {
		return f.fail(err)
	}
	c, err := r.Cursor(pos)
	if err != nil {
		return f.fail(err)
	}
	defer c.Close()
	w := bufio.NewWriterSize(stdout, 256<<10)
	var line []byte
	n := 0
	for {
		rec, _, err := c.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			w.Flush()
			return f.fail(err)
		}
		line = capture.AppendLine(line[:0], messageOf(rec))
		if _, err := w.Write(line); err != nil {
			return f.fail(err)
		}
		n++
	}
	if err := w.Flush(); err != nil {
		return f.fail(err)
	}
	if spool.AppenderAlive(f.dir) {
		fmt.Fprintf(stderr, "meshingest spool export: %d records; the receiver's active segment is not included until it is sealed (about a second)\n", n)
	}
	if damaged > 0 {
		return 1
	}
	return 0
}

// spoolImport appends a capture through an appender of its own, so the
// receiver must be stopped (one appender per spool).
func spoolImport(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("import", "import [--dir DIR | --config FILE] [--source NAME] FILE.jsonl|-", stderr, false)
	source := f.fs.String("source", "import", "source name for lines without one")
	if code := f.parse(args); code >= 0 {
		return code
	}
	if f.fs.NArg() != 1 {
		f.fs.Usage()
		return 2
	}
	in := io.Reader(os.Stdin)
	if name := f.fs.Arg(0); name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return f.fail(err)
		}
		defer file.Close()
		in = file
	}
	app, err := spool.OpenAppender(f.dir, spool.OptionsFromConfig(f.spool))
	if err != nil {
		if errors.Is(err, spool.ErrLocked) {
			fmt.Fprintf(stderr, "meshingest spool import: %v\nstop the receiver, import, then start it again\n", err)
			return 1
		}
		return f.fail(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	done := func(err error) {
		if err != nil {
			mu.Lock()
			failed = err
			mu.Unlock()
		}
		wg.Done()
	}
	rd := capture.NewReader(in)
	n, skipped := 0, 0
	for {
		m, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintf(stderr, "meshingest spool import: skipped: %v\n", err)
			skipped++
			if errors.Is(err, capture.ErrBadLine) {
				continue
			}
			break
		}
		rec := recordOf(m)
		if rec.Source == "" {
			rec.Source = *source
		}
		wg.Add(1)
		for {
			err = app.Append(rec, done)
			if !errors.Is(err, spool.ErrQueueFull) {
				break
			}
			time.Sleep(time.Millisecond) // the disk is behind; wait for it
		}
		if err != nil {
			wg.Done()
			if errors.Is(err, spool.ErrFull) {
				app.Close()
				return f.fail(fmt.Errorf("line %d: %w", rd.Line(), err))
			}
			fmt.Fprintf(stderr, "meshingest spool import: line %d skipped: %v\n", rd.Line(), err)
			skipped++
			continue
		}
		n++
	}
	wg.Wait()
	if err := app.Close(); err != nil && failed == nil {
		failed = err
	}
	if failed != nil {
		return f.fail(failed)
	}
	fmt.Fprintf(stdout, "imported %d records into %s (%d lines skipped)\n", n, f.dir, skipped)
	if skipped > 0 {
		return 1
	}
	return 0
}

// messageOf and recordOf map a spool record to a capture line and back,
// every field but the Seq (which the importing appender assigns): a round
// trip that dropped the QoS, the DUP flag or the packet id made a broker's
// redeliveries new messages.
func messageOf(rec spool.Record) capture.Message {
	return capture.Message{Topic: rec.Topic, Payload: rec.Payload, ReceivedAt: rec.ReceivedAt, Source: rec.Source,
		Retained: rec.Retained, Broker: rec.Broker, QoS: rec.QoS, Duplicate: rec.Duplicate, MessageID: rec.MessageID}
}

func recordOf(m capture.Message) spool.Record {
	return spool.Record{ReceivedAt: m.ReceivedAt, Source: m.Source, Broker: m.Broker, Topic: m.Topic, QoS: m.QoS,
		Retained: m.Retained, Duplicate: m.Duplicate, MessageID: m.MessageID, Payload: m.Payload}
}
