package shared

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadProcIO_SeesOwnWrites(t *testing.T) {
	before, err := ReadProcIO(0)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	if err := os.WriteFile(filepath.Join(t.TempDir(), "f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := ReadProcIO(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.Wchar-before.Wchar < uint64(len(data)) || after.SyscW <= before.SyscW {
		t.Fatalf("wchar %d→%d, syscw %d→%d: the 1 MiB write is not counted", before.Wchar, after.Wchar, before.SyscW, after.SyscW)
	}
}
