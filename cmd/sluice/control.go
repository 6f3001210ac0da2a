package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// cmdControl runs the client commands that talk to a running master over
// its control socket: reload, upgrade, stop and control (raw commands).
func cmdControl(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "/etc/sluice/sluice.toml", "configuration file (to find the control socket)")
	sock := fs.String("S", "", "control socket (default: global.control_socket of -f)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the outcome")
	drain := fs.Bool("drain", false, "stop: let open connections finish (up to hard_stop_after)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path := *sock
	if path == "" {
		p, err := controlPathOf(*file)
		if err != nil {
			fmt.Fprintf(stderr, "sluice %s: %v\n", name, err)
			return 1
		}
		path = p
	}
	req := map[string]any{"cmd": name}
	switch name {
	case "stop":
		req["drain"] = *drain
	case "control":
		if fs.NArg() == 0 {
			fmt.Fprintln(stderr, "usage: sluice control [-S SOCKET | -f FILE] COMMAND [key=value ...]")
			return 2
		}
		req["cmd"] = fs.Arg(0)
		for _, kv := range fs.Args()[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				fmt.Fprintf(stderr, "sluice control: %q is not key=value\n", kv)
				return 2
			}
			req[k] = ctlValue(v)
		}
	}
	reply, raw, err := control(path, req, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", name, err)
		return 1
	}
	if !reply.OK {
		fmt.Fprintf(stderr, "sluice %s failed:\n%s\n", name, reply.Error)
		return 1
	}
	switch name {
	case "reload", "upgrade":
		fmt.Fprintf(stdout, "%s done: master %d, worker %d (generation %d), version %s\n", name, reply.PID, reply.WorkerPID, reply.Generation, reply.Version)
	case "stop":
		fmt.Fprintf(stdout, "master %d stopped\n", reply.PID)
	default:
		stdout.Write(raw)
	}
	return 0
}

// ctlValue turns "true", "false" and integers into JSON values.
func ctlValue(v string) any {
	if b, err := strconv.ParseBool(v); err == nil {
		return b
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	return v
}

// controlPathOf finds the control socket in a configuration file. It reads
// only [global], leniently, so that `sluice reload` reaches the master (and
// shows its errors) even when the file has problems elsewhere.
func controlPathOf(file string) (string, error) {
	var raw struct {
		Global struct {
			ControlSocket string `toml:"control_socket"`
			PIDFile       string `toml:"pid_file"`
		} `toml:"global"`
	}
	if _, err := toml.DecodeFile(file, &raw); err != nil {
		// A file that does not even decode: look for the two keys line by
		// line, so the master still gets to report the problem.
		src, rerr := os.ReadFile(file)
		if rerr != nil {
			return "", fmt.Errorf("cannot find the control socket in %s (use -S): %w", file, err)
		}
		for _, line := range strings.Split(string(src), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			v, uerr := strconv.Unquote(strings.TrimSpace(v))
			if uerr != nil {
				continue
			}
			switch strings.TrimSpace(k) {
			case "control_socket":
				raw.Global.ControlSocket = v
			case "pid_file":
				raw.Global.PIDFile = v
			}
		}
	}
	p := controlPath(raw.Global.ControlSocket, raw.Global.PIDFile)
	if p == "" {
		return "", fmt.Errorf("%s sets neither global.control_socket nor global.pid_file; use -S or signals", file)
	}
	return p, nil
}

// maxControlLine bounds a request on the control socket: requests are a
// few hundred bytes, and an unbounded read let one client grow the master
// by whatever it sent without a newline.
const maxControlLine = 64 << 10

var errControlLineTooLong = fmt.Errorf("request longer than %d bytes without a newline; send one JSON object per line", maxControlLine)

// readControlLine reads one request line of at most maxControlLine bytes
// from a control connection.
func readControlLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > maxControlLine {
			return nil, errControlLineTooLong
		}
		line = append(line, frag...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// control sends one request to the master and reads its reply.
func control(path string, req any, timeout time.Duration) (ctlReply, []byte, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return ctlReply{}, nil, fmt.Errorf("cannot reach the master: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return ctlReply{}, nil, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return ctlReply{}, nil, errors.New("the master closed the connection without an answer")
		}
		return ctlReply{}, nil, err
	}
	var r ctlReply
	if err := json.Unmarshal(line, &r); err != nil {
		return ctlReply{}, nil, err
	}
	return r, line, nil
}
