package supervisor

import (
	"encoding/json"

	"sluice/engine"
	"sluice/internal/sockets"
	"sluice/stats"
)

// The control socket speaks JSON lines: one request, one reply, then the
// master closes the connection.
//
//	{"cmd":"reload"}                     re-read the file, start a new worker
//	{"cmd":"upgrade"}                    re-execute the binary, then reload
//	{"cmd":"stop","drain":true}          drain (false: stop at once) and exit
//	{"cmd":"status"}                     pid, worker pid, generation, config
//	{"cmd":"diff"}                       what a reload of the file would change (changes), or its problems
//	{"cmd":"show-servers"}               the current worker's server state
//	{"cmd":"show-servers","known":true}  the state the master last heard (kept across a worker crash)
//	{"cmd":"set-server-state","backend":"b","server":"s",
//	 "admin":"drain","up":false,"weight":3}   (each of the last three optional)
//	{"cmd":"set-node","admin":"maint"}   the node's admin state: maint or ready (global.track_file)
//	{"cmd":"show-bgp"}                   the BGP speaker's sessions and announcements
//	{"cmd":"get-sockets"}                the listeners, as SCM_RIGHTS (sluice run -x)
//
// Every reply has "ok" and, when ok is false, "error".
type Request struct {
	Cmd     string `json:"cmd"`
	Drain   bool   `json:"drain,omitempty"`
	Backend string `json:"backend,omitempty"`
	Server  string `json:"server,omitempty"`
	Admin   string `json:"admin,omitempty"`
	Up      *bool  `json:"up,omitempty"`
	Weight  *int   `json:"weight,omitempty"`
	Known   bool   `json:"known,omitempty"` // show-servers: the master's copy, without asking the worker
}

type Reply struct {
	OK         bool            `json:"ok"`
	Error      string          `json:"error,omitempty"`
	PID        int             `json:"pid,omitempty"`
	WorkerPID  int             `json:"worker_pid,omitempty"`
	Generation int             `json:"generation,omitempty"`
	Config     string          `json:"config,omitempty"`
	Version    string          `json:"version,omitempty"`
	Servers    engine.State    `json:"servers,omitempty"`
	Sockets    []sockets.Entry `json:"sockets,omitempty"` // get-sockets: fd is the index of the attached descriptor
	// ControlRefused (status): control connections refused because
	// maxControlConns were open.
	ControlRefused uint64 `json:"control_refused,omitempty"`
	// Changes (diff): conf.Change lines from the running configuration
	// to the file as it is now.
	Changes []string `json:"changes,omitempty"`
	// Unserved (status): why this node cannot serve ("" while it can),
	// the verdict global.track_file follows; NodeMaint: the node is in
	// maintenance.
	Unserved  string `json:"unserved,omitempty"`
	NodeMaint bool   `json:"node_maint,omitempty"`
	// BGP (show-bgp): the BGP speaker's state; absent without [bgp].
	BGP *stats.BGP `json:"bgp,omitempty"`
}

// Between master and worker: a socketpair on the worker's fd 3, JSON lines.
// The master first sends workerStart; the worker answers workerMsg{Ready}
// (or Error) once it serves. Then the master sends workerMsg requests with
// an ID and the worker answers each with the same ID.
type workerStart struct {
	File    string          `json:"file"`
	Config  []byte          `json:"config"` // the bytes the master validated
	Sockets []sockets.Entry `json:"sockets"`
	State   engine.State    `json:"state,omitempty"`
	Gen     int             `json:"gen"`
	Debug   bool            `json:"debug,omitempty"`
	// NodeMaint starts the worker with the node in maintenance.
	NodeMaint bool `json:"node_maint,omitempty"`
	// TrackFile is the master's global.track_file: a worker whose master
	// dies writes 1 there (the master cannot).
	TrackFile string `json:"track_file,omitempty"`
}

type workerMsg struct {
	ID int `json:"id,omitempty"`
	// "state" | "set-server" | "set-node" | "node" | "drain" | "stop"; a
	// worker also sends "state" with ID 0, unasked, when its server state
	// changes, and "node" with ID 0 when its node report does. A push
	// with Ack set asks the master for a "state-ack" with the same Ack
	// once it holds that state (an admin API change waits for it).
	Op    string `json:"op,omitempty"`
	Ack   int    `json:"ack,omitempty"`
	Ready bool   `json:"ready,omitempty"`
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`

	HardStopAfter string          `json:"hard_stop_after,omitempty"` // drain
	Set           *Request        `json:"set,omitempty"`             // set-server
	State         json.RawMessage `json:"state,omitempty"`           // reply to state and set-server; the push
	Node          *nodeReport     `json:"node,omitempty"`            // ready, set-node, node, and the "node" push
	BGP           *stats.BGP      `json:"bgp,omitempty"`             // "bgp": the master's BGP state, pushed (ID 0, no answer)
}

// upgradeState is what a master hands to its own re-executed image (binary
// upgrade) in a memfd named by $SLUICE_UPGRADE_FD.
type upgradeState struct {
	File    string          `json:"file"`
	Config  []byte          `json:"config"` // the configuration the workers run
	Debug   bool            `json:"debug,omitempty"`
	Gen     int             `json:"gen"`
	Sockets []sockets.Entry `json:"sockets"` // listeners and the control socket
	Workers []adoptWorker   `json:"workers"`
	// NodeMaint: the node is in maintenance.
	NodeMaint bool `json:"node_maint,omitempty"`
	Reply     int  `json:"reply"` // the upgrade request's connection, or -1
}

type adoptWorker struct {
	PID     int  `json:"pid"`
	FD      int  `json:"fd"`
	Gen     int  `json:"gen"`
	Current bool `json:"current,omitempty"`
}

const (
	envUpgradeFD  = "SLUICE_UPGRADE_FD"
	WorkerCommand = "__worker" // hidden sub-command a master starts its workers with
)
