// Command meshingest-harness is the load and fault harness: it runs the
// real meshingest receiver and writer processes against a real mosquitto
// and real files, breaks things while the load runs, and checks every
// published message against the database (package tests/harness).
//
// It is a separate executable so that the product binary links neither the
// harness, nor its load generator, nor its plotting library.
package main

import (
	"fmt"
	"os"

	"github.com/meshingest/meshingest/tests/harness"
)

func main() {
	os.Exit(dispatch(os.Args[1:]))
}

func dispatch(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := os.Stderr
		if len(args) > 0 {
			w = os.Stdout
		}
		fmt.Fprintln(w, "usage: meshingest-harness <command> [flags]")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "  bench  the steady load and a burst against real processes; markdown report and plot")
		fmt.Fprintln(w, "  chaos  the fault scenarios under load: kills, a held lock, broker restart, full spool, damaged segments, database swap")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "'meshingest-harness <command> -h' shows a command's flags and scenarios.")
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "bench":
		return harness.Command("bench", args[1:], harness.BenchScenarios)
	case "chaos":
		return harness.Command("chaos", args[1:], harness.ChaosScenarios)
	}
	fmt.Fprintf(os.Stderr, "meshingest-harness: unknown command %q; run 'meshingest-harness help' for the list\n", args[0])
	return 2
}
