package main

import "github.com/meshingest/meshingest/harness"

// runBench is `meshingest bench`: the steady load and the burst against
// real receiver and writer processes; the logic is in package harness.
func runBench(args []string) int { return harness.Command("bench", args, harness.BenchScenarios) }
