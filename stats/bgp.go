package stats

import "time"

// BGP is the state of the master's BGP speaker ([bgp]), shown on the page,
// in /api/stats and /metrics. The master sends it to its worker whenever
// it changes; nil while [bgp] is not configured.
type BGP struct {
	ASN       uint32        `json:"asn"`
	RouterID  string        `json:"router_id"`
	Neighbors []BGPNeighbor `json:"neighbors"`
	Prefixes  []BGPPrefix   `json:"prefixes"`
	// Changes counts announcements and withdrawals since the master started.
	Changes    uint64    `json:"changes"`
	LastChange time.Time `json:"last_change,omitzero"`
	LastWhy    string    `json:"last_why,omitempty"` // what the last change did and why
}

// BGPNeighbor is one session.
type BGPNeighbor struct {
	Address string    `json:"address"`
	ASN     uint32    `json:"asn"`
	State   string    `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Up      bool      `json:"up"`    // established
	Since   time.Time `json:"since,omitzero"`
}

// BGPPrefix is one [[bgp.announce]].
type BGPPrefix struct {
	Prefix    string    `json:"prefix"`
	Announced bool      `json:"announced"`
	Why       string    `json:"why,omitempty"` // why it is withdrawn ("" while announced)
	Since     time.Time `json:"since,omitzero"`
}
