package l7

// FetchNow makes Run fetch at once, even over a fresh staple from a file.
func (c *ServedCert) FetchNow() { c.fetchNow = true }

// RefreshIn is refreshIn.
var RefreshIn = refreshIn
