// Package recovery logs a panic recovered at a connection's entry point:
// one connection's bug must cost that connection, never the worker and
// every other connection with it.
package recovery

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
)

// Log records the recovered value p: an error line with the function and
// line that panicked, and the whole stack at debug level. attrs name the
// connection (frontend, client...). Call it from the deferred function that
// recovered.
func Log(log *slog.Logger, p any, attrs ...any) {
	if log == nil {
		return
	}
	args := append([]any{"panic", fmt.Sprint(p), "at", where()}, attrs...)
	log.Error("panic serving a connection; connection closed", args...)
	if log.Enabled(context.Background(), slog.LevelDebug) {
		log.Debug("panic stack", append(args, "stack", string(debug.Stack()))...)
	}
}

// where is the first frame past runtime.gopanic: the code that panicked.
func where() string {
	pc := make([]uintptr, 32)
	n := runtime.Callers(3, pc)
	frames := runtime.CallersFrames(pc[:n])
	seen := false
	for {
		f, more := frames.Next()
		if seen && !strings.HasPrefix(f.Function, "runtime.") {
			return fmt.Sprintf("%s (%s:%d)", f.Function, f.File, f.Line)
		}
		if f.Function == "runtime.gopanic" {
			seen = true
		}
		if !more {
			return "unknown"
		}
	}
}
