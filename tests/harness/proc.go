package harness

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshingest/meshingest/shared"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go runs on.
const clockTicks = 100

// ProcSample is one reading of a process's costs from /proc.
type ProcSample struct {
	IO shared.ProcIO
	// CPUSeconds is utime + stime.
	CPUSeconds float64
	// RSSBytes is VmRSS now, HWMBytes VmHWM (the peak since start).
	RSSBytes, HWMBytes int64
}

// ReadProc reads /proc/PID/io, /proc/PID/stat and /proc/PID/status.
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	var err error
	if s.IO, err = shared.ReadProcIO(pid); err != nil {
		return s, err
	}
	if s.CPUSeconds, err = readCPU(pid); err != nil {
		return s, err
	}
	s.RSSBytes, s.HWMBytes, err = readMemory(pid)
	return s, err
}

// readCPU parses utime and stime (fields 14 and 15) of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func readCPU(pid int) (float64, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("read %s: no command field", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("read %s: %d fields", path, len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("read %s: utime %q stime %q", path, f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

// readMemory reads VmRSS and VmHWM (kB) from /proc/PID/status.
func readMemory(pid int) (rss, hwm int64, err error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	return rss, hwm, sc.Err()
}

// readPSS reads the proportional set size (kB) from /proc/PID/smaps_rollup:
// the pages a process shares (the executable's text, with the other
// meshingest process) count a share each, so the sum over processes is the
// memory they take together, which a sum of RSS counts twice.
func readPSS(pid int) (int64, error) {
	path := fmt.Sprintf("/proc/%d/smaps_rollup", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if value, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read %s: Pss %q", path, value)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("read %s: no Pss line", path)
}

// memoryPeak samples, every interval until stop is closed, the sum of the
// processes' PSS and of their RSS, and returns the highest of each.
func memoryPeak(pids func() []int, interval time.Duration, stop <-chan struct{}) (pss, rss int64) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var p, r int64
		whole := true // a process gone or restarting: the sample does not count
		for _, pid := range pids() {
			v, err := readPSS(pid)
			now, _, err2 := readMemory(pid)
			whole = whole && err == nil && err2 == nil
			p, r = p+v, r+now
		}
		if whole {
			pss, rss = max(pss, p), max(rss, r)
		}
		select {
		case <-stop:
			return pss, rss
		case <-t.C:
		}
	}
}
