package main

import "github.com/meshingest/meshingest/harness"

// runChaos is `meshingest chaos`: the fault scenarios under load (kills,
// lock, broker restart, full spool, damaged segments, database swap); the
// logic is in package harness.
func runChaos(args []string) int { return harness.Command("chaos", args, harness.ChaosScenarios) }
