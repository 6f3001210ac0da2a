//go:build race

package l4_test

// raceEnabled: the race detector allocates, and sync.Pool drops items on
// purpose, so allocation counts mean nothing.
const raceEnabled = true
