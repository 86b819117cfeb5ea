package spool

import (
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"

	"github.com/meshingest/meshingest/internal/testkit"
)

func TestRecord_Encode_RoundTrip(t *testing.T) {
	for i, n := range []int{0, 1, 400, 70000} {
		in := testRecord(i, n)
		in.Seq = uint64(1000 + i)
		out, err := decodeRecord(appendRecord(nil, &in))
		if err != nil {
			t.Fatal(err)
		}
		if out.Seq != in.Seq || !sameContent(in, out) {
			t.Fatalf("round trip of %+v gave %+v", in, out)
		}
		if out.ReceivedAt.Location().String() != "UTC" {
			t.Fatalf("receive time not UTC: %v", out.ReceivedAt)
		}
	}
}

func TestRecord_Decode_EveryFlipDetected(t *testing.T) {
	in := testRecord(3, 64)
	in.Seq = 77
	enc := appendRecord(nil, &in)
	for i := range enc {
		for _, bit := range []byte{1, 0x80} {
			b := append([]byte(nil), enc...)
			b[i] ^= bit
			if _, err := decodeRecord(b); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip of bit %x in byte %d not detected: %v", bit, i, err)
			}
		}
	}
	for n := 0; n < len(enc); n++ {
		if _, err := decodeRecord(enc[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncation to %d bytes not detected", n)
		}
	}
}

func TestRecord_Decode_UnknownVersion(t *testing.T) {
	in := testRecord(1, 10)
	enc := appendRecord(nil, &in)
	enc[0] = 2
	_, err := decodeRecord(enc)
	if !errors.Is(err, ErrCorrupt) || !contains(err.Error(), "unknown record version 2") {
		t.Fatalf("got %v", err)
	}
}

func TestRecord_Decode_RandomBytesNeverPanic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		b := make([]byte, rng.IntN(200))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if len(b) > 0 && rng.IntN(2) == 0 {
			b[0] = recordVersion
		}
		decodeRecord(b)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub))
}

// The spool must build where int is 32 bits (a Raspberry Pi's armv6/7):
// a payload bound of 1<<31 written as an int constant did not.
//
// From an empty build cache this compiles the standard library for arm
// too, minutes on a loaded machine: it runs with MESHINGEST_LONG_TESTS=1,
// and .ci/cross builds (and runs) the whole product for every Pi anyway.
func TestRecord_BuildsFor32BitARM(t *testing.T) {
	if testing.Short() || !testkit.Long() {
		t.Skip("cross-compiles the package: MESHINGEST_LONG_TESTS=1 (.ci/cross builds every Pi)")
	}
	cmd := exec.Command("go", "build", "-o", os.DevNull, ".")
	cmd.Env = append(os.Environ(), "GOARCH=arm", "GOARM=6", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOARCH=arm GOARM=6 go build ./spool: %v\n%s", err, out)
	}
}
