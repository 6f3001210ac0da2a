package l7

// FetchNow makes Run fetch at once, even over a fresh staple from a file.
func (c *ServedCert) FetchNow() { c.fetchNow = true }

// Fetched gets a value after each fetch Run finishes.
func (c *ServedCert) Fetched() <-chan struct{} { return c.fetched }

// RefreshIn is refreshIn.
var RefreshIn = refreshIn
