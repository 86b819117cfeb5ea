package shared

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcIO is one reading of /proc/<pid>/io. WriteBytes is what the process
// caused to be written to the block layer, the figure disk-cost claims use.
type ProcIO struct {
	Rchar               uint64 // bytes passed to read-like syscalls
	Wchar               uint64 // bytes passed to write-like syscalls
	SyscR               uint64 // read syscalls
	SyscW               uint64 // write syscalls
	ReadBytes           uint64 // bytes fetched from storage
	WriteBytes          uint64 // bytes sent to storage
	CancelledWriteBytes uint64 // bytes written then truncated away
}

// ReadProcIO reads /proc/<pid>/io; pid 0 means this process.
func ReadProcIO(pid int) (ProcIO, error) {
	path := "/proc/self/io"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/io", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		return ProcIO{}, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	var p ProcIO
	fields := map[string]*uint64{
		"rchar": &p.Rchar, "wchar": &p.Wchar, "syscr": &p.SyscR, "syscw": &p.SyscW,
		"read_bytes": &p.ReadBytes, "write_bytes": &p.WriteBytes,
		"cancelled_write_bytes": &p.CancelledWriteBytes,
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if dst := fields[name]; ok && dst != nil {
			*dst, _ = strconv.ParseUint(strings.TrimSpace(value), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return ProcIO{}, fmt.Errorf("read %s: %w", path, err)
	}
	return p, nil
}
