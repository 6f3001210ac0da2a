package backend

import (
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// StickyTable remembers which server each client address was sent to
// (sticky = "source"). An entry lasts TTL after its last use and the table
// holds at most its size in entries, evicting the least recently used.
//
// It is safe for concurrent use: the table is split into shards by address
// hash, each with its own mutex, map and recency list, so lookups from many
// cores rarely meet. Entries live in a per-shard slab linked by index and
// are reused on eviction, so a full table stops allocating.
type StickyTable struct {
	TTL time.Duration    // 0: entries never expire (the size bound still holds)
	Now func() time.Time // the clock; tests replace it

	shards []stickyShard
	shift  uint // address hash >> shift is the shard index
	notify atomic.Pointer[func(StickyEntry)]
}

// StickyEntry is one client → server entry, for the stats page, the admin
// API and peer synchronisation.
type StickyEntry struct {
	Client   netip.Addr
	ServerID string    // Server.ID
	Server   string    // server name, filled by Backend.StickyEntries
	LastUsed time.Time // the entry expires TTL after this
}

type stickyShard struct {
	mu     sync.Mutex
	index  map[netip.Addr]int32
	slab   []stickySlot
	free   int32 // first free slot, or -1
	newest int32 // recency list, or -1 when empty
	oldest int32
	n, max int
	_      [64]byte // keeps neighbouring shards' locks off one cache line
}

type stickySlot struct {
	addr       netip.Addr
	id         string
	used       int64 // unix nanos of the last use
	prev, next int32 // towards newer, towards older; -1 ends
	// remote: the last use was a peer's (SetEntry), not this node's; a
	// peer's refresh sends only entries used here, so that in a mesh each
	// node pushes its own uses to all and passes on nobody's.
	remote bool
}

// stickyShardMin is the smallest shard worth splitting the table for: below
// 2 × this size the table is one shard and evicts in exact LRU order.
const stickyShardMin = 1024

// NewStickyTable returns a table of at most size entries (at least 1).
func NewStickyTable(size int, ttl time.Duration) *StickyTable {
	size = max(size, 1)
	shards := 1
	for shards < 64 && size/(2*shards) >= stickyShardMin {
		shards *= 2
	}
	t := &StickyTable{TTL: ttl, Now: time.Now, shards: make([]stickyShard, shards), shift: 64}
	for s := shards; s > 1; s >>= 1 {
		t.shift--
	}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.max = size / shards
		if i < size%shards {
			sh.max++
		}
		sh.index = make(map[netip.Addr]int32)
		sh.free, sh.newest, sh.oldest = -1, -1, -1
	}
	return t
}

func (t *StickyTable) shard(a netip.Addr) *stickyShard {
	if len(t.shards) == 1 {
		return &t.shards[0]
	}
	return &t.shards[addrHash(a)>>t.shift]
}

func (t *StickyTable) expired(used, now int64) bool {
	return t.TTL > 0 && now-used >= int64(t.TTL)
}

// Get returns the server ID recorded for a and refreshes the entry, or
// false when there is none or it has expired.
func (t *StickyTable) Get(a netip.Addr) (string, bool) {
	now := t.Now().UnixNano()
	sh := t.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.index[a]
	if !ok {
		return "", false
	}
	e := &sh.slab[i]
	if t.expired(e.used, now) {
		sh.drop(i)
		return "", false
	}
	e.used, e.remote = now, false
	sh.toFront(i)
	return e.id, true
}

// Set records that a goes to the server with ID id, and tells the
// function installed with SetNotify.
func (t *StickyTable) Set(a netip.Addr, id string) {
	now := t.Now().UnixNano()
	t.set(a, id, now)
	if fn := t.notify.Load(); fn != nil {
		(*fn)(StickyEntry{Client: a, ServerID: id, LastUsed: time.Unix(0, now)})
	}
}

// SetNotify installs fn, called after each Set (a new or changed choice) with
// the entry, outside the table's locks; nil removes it. SetEntry does not
// call it, so entries received from a peer are not echoed back. fn runs on
// the connection's path: it must not block or allocate (peer
// synchronisation sends on a buffered channel and drops when it is full).
func (t *StickyTable) SetNotify(fn func(StickyEntry)) {
	if fn == nil {
		t.notify.Store(nil)
		return
	}
	t.notify.Store(&fn)
}

// SetEntry records e as it is, keeping its last use (peer synchronisation).
// An entry already expired is ignored, and so is one older than the entry
// the table has for the same client: the most recent use wins, so a peer
// resending its tables after a reconnect does not undo newer choices.
func (t *StickyTable) SetEntry(e StickyEntry) {
	if !t.expired(e.LastUsed.UnixNano(), t.Now().UnixNano()) {
		t.setIfNewer(e.Client, e.ServerID, e.LastUsed.UnixNano(), true)
	}
}

func (t *StickyTable) set(a netip.Addr, id string, used int64) { t.setIfNewer(a, id, used, false) }

func (t *StickyTable) setIfNewer(a netip.Addr, id string, used int64, onlyNewer bool) {
	now := t.Now().UnixNano()
	sh := t.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i, ok := sh.index[a]; ok {
		e := &sh.slab[i]
		if onlyNewer && e.used > used && !t.expired(e.used, now) {
			return
		}
		e.id, e.used, e.remote = id, used, onlyNewer
		sh.toFront(i)
		return
	}
	// Expired entries are the oldest ones: clear them from the end first.
	for sh.oldest >= 0 && t.expired(sh.slab[sh.oldest].used, now) {
		sh.drop(sh.oldest)
	}
	if sh.n >= sh.max {
		sh.drop(sh.oldest)
	}
	var i int32
	if sh.free >= 0 {
		i = sh.free
		sh.free = sh.slab[i].next
	} else {
		sh.slab = append(sh.slab, stickySlot{})
		i = int32(len(sh.slab) - 1)
	}
	sh.slab[i] = stickySlot{addr: a, id: id, used: used, prev: -1, next: -1, remote: onlyNewer}
	sh.index[a] = i
	sh.n++
	sh.link(i)
}

// Delete forgets a.
func (t *StickyTable) Delete(a netip.Addr) {
	sh := t.shard(a)
	sh.mu.Lock()
	if i, ok := sh.index[a]; ok {
		sh.drop(i)
	}
	sh.mu.Unlock()
}

// Len is the number of entries, counting expired ones not yet cleared.
func (t *StickyTable) Len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// Entries returns the live entries, most recently used first.
func (t *StickyTable) Entries() []StickyEntry {
	now := t.Now().UnixNano()
	var out []StickyEntry
	for k := range t.shards {
		sh := &t.shards[k]
		sh.mu.Lock()
		for i := sh.newest; i >= 0; i = sh.slab[i].next {
			e := &sh.slab[i]
			if !t.expired(e.used, now) {
				out = append(out, StickyEntry{Client: e.addr, ServerID: e.id, LastUsed: time.Unix(0, e.used)})
			}
		}
		sh.mu.Unlock()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out
}

// UsedSince returns the live entries used after since (all of them for the
// zero time), in no particular order. It walks the whole table: entries
// received from a peer keep their older last use, so the recency lists are
// not ordered by it.
func (t *StickyTable) UsedSince(since time.Time) []StickyEntry { return t.usedSince(since, false) }

// UsedHereSince is UsedSince without the entries whose last use came from
// a peer (SetEntry): what this node itself used.
func (t *StickyTable) UsedHereSince(since time.Time) []StickyEntry { return t.usedSince(since, true) }

func (t *StickyTable) usedSince(since time.Time, here bool) []StickyEntry {
	now := t.Now().UnixNano()
	after := since.UnixNano()
	if since.IsZero() {
		after = 0
	}
	var out []StickyEntry
	for k := range t.shards {
		sh := &t.shards[k]
		sh.mu.Lock()
		for i := sh.newest; i >= 0; i = sh.slab[i].next {
			e := &sh.slab[i]
			if e.used <= after || t.expired(e.used, now) || here && e.remote {
				continue
			}
			out = append(out, StickyEntry{Client: e.addr, ServerID: e.id, LastUsed: time.Unix(0, e.used)})
		}
		sh.mu.Unlock()
	}
	return out
}

// link puts slot i at the newest end of the recency list.
func (sh *stickyShard) link(i int32) {
	e := &sh.slab[i]
	e.prev, e.next = -1, sh.newest
	if sh.newest >= 0 {
		sh.slab[sh.newest].prev = i
	}
	sh.newest = i
	if sh.oldest < 0 {
		sh.oldest = i
	}
}

func (sh *stickyShard) unlink(i int32) {
	e := &sh.slab[i]
	if e.prev >= 0 {
		sh.slab[e.prev].next = e.next
	} else {
		sh.newest = e.next
	}
	if e.next >= 0 {
		sh.slab[e.next].prev = e.prev
	} else {
		sh.oldest = e.prev
	}
}

func (sh *stickyShard) toFront(i int32) {
	if sh.newest != i {
		sh.unlink(i)
		sh.link(i)
	}
}

// drop removes slot i and puts it on the free list.
func (sh *stickyShard) drop(i int32) {
	sh.unlink(i)
	delete(sh.index, sh.slab[i].addr)
	sh.slab[i] = stickySlot{next: sh.free}
	sh.free = i
	sh.n--
}
