package backend

import (
	"context"
	"errors"
	"net"
	"syscall"
)

// Connect is one connection's (tcp, udp flow) or one request's (http) way
// to a server, and Backend.Connect is the one place every mode takes it:
//
//	pick        Pinned (a sticky cookie's server) on the first attempt when
//	            it has a free slot, else source stickiness and the
//	            algorithm (Pick), avoiding the server that just failed
//	acquire     the server's maxconn slot (TryAcquire)
//	queue       all full: FIFO wait up to queue_timeout (PickWait); NoQueue
//	            refuses at once instead
//	dial        the caller's callback, which may take a slot of the
//	            process's ServerConns budget with TakeSlot
//	retry       a failed connect (ConnectFailed) counts ConnErrors, is
//	            observed, and is tried again on another server while
//	            retries last (Retries)
//
// ctx ends the whole of it: a client that leaves (an HTTP/2 stream reset, a
// client connection that closes while queued, see Watch) or a hard stop
// takes the connection out of the queue and cancels the dial at once.
//
// Passive observation, one rule for every mode: a failed connect is a
// failure (here); success is observed where the mode sees the server
// alive: tcp at connect (ObserveConnect, here), udp at a reply (l4: a
// connected UDP socket opens without the server), http at a response
// below 500 (l7, which also observes 5xx and server timeouts as failures).
//
// A Connect lives on its caller's stack; nothing here allocates unless the
// connection has to wait in the queue or a connect fails.
type Connect struct {
	Client Client
	// Pinned is a server the request asks for by cookie (sticky =
	// "cookie"); it is used on the first attempt when it has a free slot.
	Pinned *Server
	// Held is a server already acquired for this request by a Connect
	// that ended with ErrMoved: the first attempt uses it, without a pick
	// or the queue.
	Held *Server
	// Skip is a server to avoid on the first attempt (a udp flow moved off
	// a server that went down).
	Skip *Server
	// Budget is the process's server-connection budget the callback takes
	// a slot of with TakeSlot; nil: no limit.
	Budget *ServerConns
	// Watch is the client's connection (tcp, HTTP/1): while the connect
	// waits in the queue, one goroutine watches it and gives up the wait
	// when the client closes it. Nothing watches a connection that finds
	// a free server at once.
	Watch net.Conn
	// WatchResetOnly (tcp): only a reset of Watch gives up the wait; a FIN
	// is a half-close (the client sent all it had, as `nc -N` does, and
	// still reads the answer), kept as HAProxy keeps it. Unset (HTTP/1):
	// a FIN leaves the queue too, as HAProxy's `option abortonclose`.
	WatchResetOnly bool
	// ObserveConnect marks the server OK when the connect succeeds (tcp).
	ObserveConnect bool
	// NoQueue refuses at once (ErrQueueTimeout, counted in QueueTimeouts
	// as a queue_timeout of 0) when every server is at its maxconn (udp:
	// its readers serve every client of a socket, and one waiting would
	// hold up the others' datagrams).
	NoQueue bool

	// Server is the server of the attempt in progress (for the callback),
	// and after Connect the one connected to or, on failure, the last one
	// tried (nil when none was picked). On success it is acquired: the
	// caller calls Release when the connection or request ends.
	Server *Server
	// Retries counts the attempts made again on another server; attempts
	// stop when it reaches the backend's retries. A caller that sends a
	// request again for a reason of its own (a stale pooled connection)
	// adds to it and calls Connect again.
	Retries int
	// Slot reports that the callback took a slot of Budget (TakeSlot)
	// for the connection it made: it belongs to that connection now.
	Slot bool
	// Probe: TryPick counts no NoServer; its caller, when it finds no
	// server at hand, hands the request to a path that calls Connect,
	// which counts it (the HTTP/2 fast path).
	Probe bool
	// failed is the last failed connect of TryPick's caller: a NoServer
	// after it is not counted, the connect error stands.
	failed error
}

// ConnectError is a connect that failed before anything was sent: the
// callback returns one (ConnectFailed) to have it counted, observed and
// retried on another server.
type ConnectError struct{ Err error }

func (e *ConnectError) Error() string { return "connect: " + e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// ErrMoved is the callback's answer when the request must go to srv in
// the other HTTP version (its TLS handshake chose it, or chose it before):
// nothing was sent, nothing is counted; Connect returns it with the server
// kept acquired in Held (its budget slot given back), for the caller to
// Connect again on the other path.
var ErrMoved = errors.New("the server speaks the other HTTP version: the request moves to it")

// ConnectFailed wraps err as a failed connect.
func ConnectFailed(err error) error { return &ConnectError{Err: err} }

// LocalFailure reports whether a connect failed for want of a resource of
// this host (descriptors, memory, ephemeral ports), not because of the
// server: the server is neither marked (passive observation) nor counted,
// and no other server is tried, as it would fail the same way. Under
// descriptor exhaustion healthy servers were counted thousands of
// connection errors and could have been taken down.
func LocalFailure(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.EADDRNOTAVAIL)
}

// IsConnectError reports whether err is (or wraps) a ConnectError.
func IsConnectError(err error) bool {
	var ce *ConnectError
	return errors.As(err, &ce)
}

// TakeSlot takes a slot of the Budget for the connection the callback is
// about to open (ErrServerConns when none is left). If the callback then
// fails, Connect gives it back; if it succeeds, the slot is the
// connection's (Slot is true) and goes back with Budget.Release when the
// connection closes.
func (c *Connect) TakeSlot() error {
	if !c.Budget.Take() {
		return ErrServerConns
	}
	c.Slot = true
	return nil
}

// Connect picks a server for c and connects to it with dial, which opens
// the connection to srv (also in c.Server; or, on the net/http path, sends the request
// and returns after the response head). See the type Connect.
//
// dial's error decides what follows: nil is success; a ConnectError is a
// failed connect, retried elsewhere; ErrServerConns ends the connect
// without a mark against the server; anything else (the request had
// already gone out) is returned as it is, for the caller to count and
// observe. In every failure the server is released. The error is then
// ErrNoServer or ErrQueueTimeout (counted in NoServer and QueueTimeouts),
// ctx's error, ErrServerConns, the last ConnectError, or the callback's
// other error.
func (b *Backend) Connect(ctx context.Context, c *Connect, dial func(ctx context.Context, srv *Server) error) error {
	// The algorithms see the client through an interface, so it moves to
	// the heap; a copy keeps c (and its caller's frame) where it is.
	cl := c.Client
	skip := c.Skip
	var lastErr error
	for {
		var srv *Server
		var err error
		if c.Held != nil {
			srv, c.Held = c.Held, nil
		} else if c.Pinned != nil && lastErr == nil && c.Pinned.Available() && c.Pinned.TryAcquire() {
			srv = c.Pinned
		} else {
			srv, err = b.connectPick(ctx, c, &cl, skip)
		}
		if err != nil {
			if lastErr != nil && (err == ErrNoServer || err == ErrQueueTimeout) {
				return lastErr // no server left to retry on: the connect error stands
			}
			if err == ErrNoServer {
				b.Counters.NoServer.Add(1)
			}
			return err
		}
		c.Server, c.Slot = srv, false
		if err = dial(ctx, srv); err == nil {
			c.Connected()
			return nil
		}
		if ctx.Err() != nil {
			// The client left or the process stops: nothing to say
			// about the server.
			c.Abandon()
			return ctx.Err()
		}
		if err == ErrMoved {
			if c.Slot {
				c.Budget.Release()
				c.Slot = false
			}
			c.Held = srv
			return err
		}
		if !b.Failed(c, err) {
			return err
		}
		lastErr = err
		skip = srv
	}
}

// The steps of Connect for a caller that cannot wait (the tcp event
// loops): TryPick, then TakeSlot and a non-blocking connect, then
// Connected, Failed (and TryPick again when it says so) or Abandon. The
// decisions are Connect's own: it is built of the same steps.

// ErrWouldQueue is TryPick's answer when the connection would have to
// wait in the queue (every server at its maxconn, or others already
// waiting): the caller hands it to Connect, which waits.
var ErrWouldQueue = errors.New("every server is at its maxconn: the connection would queue")

// TryPick picks and acquires the server of c's next attempt without
// waiting: c.Pinned first (first attempt only), else the algorithm,
// avoiding c.Skip. It never queues: ErrWouldQueue says the connection
// would, ErrNoServer that no server can take traffic (counted in NoServer
// on a first attempt; after a failed connect that error stands, and the
// caller reports it). c is not copied: it must live on the heap already
// (the algorithms see the client through an interface).
func (b *Backend) TryPick(c *Connect) (*Server, error) {
	var srv *Server
	if c.Pinned != nil && c.failed == nil && c.Pinned.Available() && c.Pinned.TryAcquire() {
		srv = c.Pinned
	} else if b.queue.waiting.Load() == 0 {
		// Newcomers do not overtake connections already waiting.
		srv = b.pickAcquire(&c.Client, c.Skip)
	}
	if srv == nil {
		if !b.pool.Load().usable() {
			if c.failed == nil && !c.Probe {
				b.Counters.NoServer.Add(1)
			}
			return nil, ErrNoServer
		}
		return nil, ErrWouldQueue
	}
	c.Server, c.Slot = srv, false
	return srv, nil
}

// Connected reports that the attempt in progress (c.Server) succeeded: a
// tcp server is observed alive (ObserveConnect).
func (c *Connect) Connected() {
	if c.ObserveConnect {
		c.Server.ObserveOK()
	}
}

// Abandon gives back the server and the budget slot of the attempt in
// progress without a word about the server (the client left, the process
// stops, or the caller hands the connection to another path).
func (c *Connect) Abandon() {
	if c.Slot {
		c.Budget.Release()
		c.Slot = false
	}
	if c.Server != nil {
		c.Server.Release()
	}
}

// Failed reports that the attempt in progress failed with err, gives its
// server and slot back, and reports whether to try again on another
// server (TryPick or Connect again; c.Skip then names the one that
// failed). A ConnectError is counted in ConnErrors, observed, and retried
// while the backend's retries last (counted in Retries); ErrServerConns
// and other errors are not.
func (b *Backend) Failed(c *Connect, err error) (retry bool) {
	c.Abandon()
	if errors.Is(err, ErrServerConns) || !IsConnectError(err) || LocalFailure(err) {
		return false
	}
	srv := c.Server
	srv.Counters.ConnErrors.Add(1)
	srv.ObserveError()
	c.failed = err
	if c.Retries >= b.Retries {
		return false
	}
	srv.Counters.Retries.Add(1)
	c.Retries++
	c.Skip = srv
	return true
}

// connectPick picks and acquires a server, waiting in the queue unless
// c.NoQueue.
func (b *Backend) connectPick(ctx context.Context, c *Connect, cl *Client, skip *Server) (*Server, error) {
	if !c.NoQueue {
		return b.pickWait(ctx, cl, skip, c.Watch, c.WatchResetOnly)
	}
	if s := b.pickAcquire(cl, skip); s != nil {
		return s, nil
	}
	if !b.pool.Load().usable() {
		return nil, ErrNoServer
	}
	b.Counters.QueueTimeouts.Add(1)
	return nil, ErrQueueTimeout
}
