//go:build !race

package l4_test

const raceEnabled = false
