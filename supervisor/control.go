package supervisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"sluice/conf"
)

// ControlPathOf finds the control socket in a configuration file. It reads
// only [global], leniently, so that `sluice reload` reaches the master (and
// shows its errors) even when the file has problems elsewhere.
func ControlPathOf(file string) (string, error) {
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
	// Relative paths as conf.Parse resolves them for the master.
	p := ControlPath(conf.Resolve(file, raw.Global.ControlSocket), conf.Resolve(file, raw.Global.PIDFile))
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

// Control sends one request to the master and reads its reply.
func Control(path string, req any, timeout time.Duration) (Reply, []byte, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return Reply{}, nil, fmt.Errorf("cannot reach the master: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return Reply{}, nil, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return Reply{}, nil, errors.New("the master closed the connection without an answer")
		}
		return Reply{}, nil, err
	}
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		return Reply{}, nil, err
	}
	return r, line, nil
}
