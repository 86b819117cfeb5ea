package writer

import (
	"os"

	"golang.org/x/sys/unix"
)

func fadviseDontNeed(f *os.File) { unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) }
