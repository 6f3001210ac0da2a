//go:build race

package l7_test

// raceEnabled: the race detector doubles the stack guard, so goroutines
// grow to 4 KiB stacks where they stay at 2 KiB without it.
const raceEnabled = true
