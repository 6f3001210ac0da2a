package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"sluice/conf"
	"sluice/stats"
	"sluice/supervisor"
)

const ctlUsage = `usage: sluice ctl [-f FILE] [-addr HOST:PORT] COMMAND
  show stat                              frontends, backends and servers
  show servers                           one line per server
  show sticky BACKEND                    the backend's sticky table (needs the admin token)
  show bgp                               BGP sessions and announced prefixes (from the master)
  show limits FRONTEND [N]               the frontend's N (20) busiest clients of its rate_limit (admin token)
  set state BACKEND/SERVER ready|drain|maint
  set weight BACKEND/SERVER N
  set node maint|ready                   this node's maintenance: still serves, but global.track_file,
                                         /healthz and check --live send traffic elsewhere
The stats address and the admin token come from [stats] in FILE; set node goes
through the control socket when [stats] has no admin token.
`

// cmdCtl is the command-line client of the stats listener's API.
func cmdCtl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	file := fs.String("f", "/etc/sluice/sluice.toml", "configuration file (for the stats address and admin token)")
	addr := fs.String("addr", "", "stats address, overriding stats.bind")
	timeout := fs.Duration("timeout", 5*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := conf.Load(*file)
	if err != nil {
		fmt.Fprintf(stderr, "sluice ctl: %v\n", err)
		return 1
	}
	c := &ctlClient{base: *addr, token: cfg.Stats.AdminToken, http: &http.Client{Timeout: *timeout}}
	if a := fs.Args(); len(a) == 3 && a[0] == "set" && a[1] == "node" && (cfg.Stats.Bind == "" || c.token == "") && *addr == "" {
		return ctlNodeViaControl(cfg, a[2], *timeout, stdout, stderr)
	}
	if a := fs.Args(); len(a) == 2 && a[0] == "show" && a[1] == "bgp" {
		return ctlBGP(cfg, *timeout, stdout, stderr)
	}
	if c.base == "" {
		if cfg.Stats.Bind == "" {
			fmt.Fprintf(stderr, "sluice ctl: %s has no [stats] table, so sluice serves no stats listener to talk to\n", *file)
			return 1
		}
		c.base = supervisor.Dialable(cfg.Stats.Bind)
	}
	c.base = "http://" + c.base
	if err := c.run(fs.Args(), stdout); err != nil {
		fmt.Fprintf(stderr, "sluice ctl: %v\n", err)
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprint(stderr, ctlUsage)
			return 2
		}
		return 1
	}
	return 0
}

type usageError string

func (u usageError) Error() string { return string(u) }

type ctlClient struct {
	base  string
	token string
	http  *http.Client
}

func (c *ctlClient) run(args []string, out io.Writer) error {
	cmd := strings.Join(args[:min(2, len(args))], " ")
	rest := args[min(2, len(args)):]
	switch {
	case cmd == "show stat" && len(rest) == 0:
		return c.showStat(out)
	case cmd == "show servers" && len(rest) == 0:
		return c.showServers(out)
	case cmd == "show sticky" && len(rest) == 1:
		return c.showSticky(out, rest[0])
	case cmd == "show limits" && (len(rest) == 1 || len(rest) == 2):
		return c.showLimits(out, rest)
	case cmd == "set state" && len(rest) == 2:
		return c.set(out, rest[0], "state", url.Values{"state": {rest[1]}})
	case cmd == "set node" && len(rest) == 1:
		return c.setNode(out, rest[0])
	case cmd == "set weight" && len(rest) == 2:
		return c.set(out, rest[0], "weight", url.Values{"weight": {rest[1]}})
	}
	if len(args) == 0 {
		return usageError("no command")
	}
	return usageError(fmt.Sprintf("unknown command %q", strings.Join(args, " ")))
}

func (c *ctlClient) do(req *http.Request) ([]byte, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (is sluice running with this configuration?)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (c *ctlClient) get(path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	body, err := c.do(req)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

func (c *ctlClient) set(out io.Writer, target, what string, form url.Values) error {
	be, sv, ok := strings.Cut(target, "/")
	if !ok || be == "" || sv == "" {
		return usageError(fmt.Sprintf("%q is not BACKEND/SERVER", target))
	}
	return c.post(out, fmt.Sprintf("/api/servers/%s/%s/%s", url.PathEscape(be), url.PathEscape(sv), what), form)
}

// post sends form to the admin API's path and prints its answer.
func (c *ctlClient) post(out io.Writer, path string, form url.Values) error {
	req, err := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	body, err := c.do(req)
	if err != nil {
		return err
	}
	fmt.Fprint(out, string(body))
	return nil
}

func (c *ctlClient) showStat(out io.Writer) error {
	var snap stats.Snapshot
	if err := c.get("/api/stats", &snap); err != nil {
		return err
	}
	p := snap.Process
	fmt.Fprintf(out, "sluice %s  pid %d  uptime %s  workers %d  reloads %d  conns %d/%d\n\n",
		p.Version, p.PID, time.Duration(p.Uptime)*time.Second, p.Workers, p.Reloads, p.Current, p.MaxConn)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "NAME\tSTATUS\tWEIGHT\tQUEUE\tCUR\tMAX\tLIM\tTOTAL\tRATE\tBYTES IN\tBYTES OUT\tDENIED\tE.CONN\tE.RESP\tRETRIES\t2xx\t4xx\t5xx\tCHECK\t")
	line := func(name string, r *stats.Row) {
		lim := "-"
		if r.SLim > 0 {
			lim = fmt.Sprint(r.SLim)
		}
		weight, r2, r4, r5, check := "", "", "", "", ""
		if r.Type != "frontend" {
			weight = fmt.Sprintf("%d/%d", r.Weight, r.ConfWeight)
		}
		if r.HTTP {
			r2, r4, r5 = fmt.Sprint(r.Resp[2]), fmt.Sprint(r.Resp[4]), fmt.Sprint(r.Resp[5])
		}
		if r.Check != nil {
			check = fmt.Sprintf("%s %.0fms", r.Check.Desc, r.Check.Duration)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n",
			name, r.Status, weight, r.QCur, r.SCur, r.SMax, lim, r.STot, r.Rate, r.BytesIn, r.BytesOut,
			r.DReq, r.ECon, r.EResp, r.Retries, r2, r4, r5, check)
	}
	for i := range snap.Frontends {
		f := &snap.Frontends[i]
		line("frontend "+f.Proxy, f)
	}
	for i := range snap.Backends {
		b := &snap.Backends[i]
		line("backend "+b.Proxy, b)
		for j := range b.Servers {
			line("  "+b.Servers[j].Name, &b.Servers[j])
		}
	}
	return tw.Flush()
}

func (c *ctlClient) showServers(out io.Writer) error {
	var snap stats.Snapshot
	if err := c.get("/api/stats", &snap); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tADDRESS\tSTATUS\tSINCE\tWEIGHT\tCUR\tTOTAL\tCHECK")
	for _, b := range snap.Backends {
		for _, s := range b.Servers {
			check := "-"
			if s.Check != nil {
				check = fmt.Sprintf("%s %.0fms", s.Check.Desc, s.Check.Duration)
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\n", b.Proxy, s.Name, s.Addr, s.Status,
				time.Duration(s.LastChange)*time.Second, s.Weight, s.ConfWeight, s.SCur, s.STot, check)
		}
	}
	return tw.Flush()
}

func (c *ctlClient) showSticky(out io.Writer, be string) error {
	var st struct {
		Backend string              `json:"backend"`
		Entries []stats.StickyEntry `json:"entries"`
	}
	if err := c.get("/api/backends/"+url.PathEscape(be)+"/sticky", &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tSERVER\tEXPIRES IN")
	for _, e := range st.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Client, e.Server, time.Duration(e.Expires)*time.Second)
	}
	return tw.Flush()
}

// showLimits is `show limits FRONTEND [N]`: the rate limit's top clients.
func (c *ctlClient) showLimits(out io.Writer, args []string) error {
	path := "/api/frontends/" + url.PathEscape(args[0]) + "/limits"
	if len(args) == 2 {
		path += "?n=" + url.QueryEscape(args[1])
	}
	var l stats.Limits
	if err := c.get(path, &l); err != nil {
		return err
	}
	fmt.Fprintf(out, "frontend %s  period %s  clients tracked %d (table %d, evicted %d)", l.Frontend,
		time.Duration(l.Period*float64(time.Second)), l.Tracked, l.TableSize, l.Evicted)
	if l.Shared {
		fmt.Fprint(out, "  shared with peers")
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "CLIENT\tREQUESTS%s\tCONN RATE%s\tCONNECTIONS%s\n", limitOf(l.Requests), limitOf(l.ConnectionRate), limitOf(l.Connections))
	for _, e := range l.Clients {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%d\n", e.Client, e.Requests, e.ConnectionRate, e.Connections)
	}
	return tw.Flush()
}

// limitOf names a limit in a column's title: " (max 100)", "" for none.
func limitOf(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (max %d)", n)
}

// setNode is `set node maint|ready` through the admin API.
func (c *ctlClient) setNode(out io.Writer, state string) error {
	if _, err := stats.ParseNodeAdmin(state); err != nil {
		return usageError(err.Error())
	}
	return c.post(out, "/api/node/state", url.Values{"state": {state}})
}

// ctlNodeViaControl is `set node` through the master's control socket, for
// a configuration without the admin API.
func ctlNodeViaControl(cfg *conf.Config, state string, timeout time.Duration, stdout, stderr io.Writer) int {
	if _, err := stats.ParseNodeAdmin(state); err != nil {
		fmt.Fprintf(stderr, "sluice ctl: %v\n", err)
		return 2
	}
	path := supervisor.ControlPath(cfg.Global.ControlSocket, cfg.Global.PIDFile)
	if path == "" {
		fmt.Fprintln(stderr, "sluice ctl: set node needs the admin API (stats.admin_token_file) or a control socket (global.control_socket)")
		return 1
	}
	r, _, err := supervisor.Control(path, supervisor.Request{Cmd: "set-node", Admin: state}, timeout)
	if err == nil && !r.OK {
		err = errors.New(r.Error)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice ctl: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "node: state %s\n", stats.NodeAdminName(r.NodeMaint))
	return 0
}

// ctlBGP prints the master's BGP state, asked on the control socket.
func ctlBGP(cfg *conf.Config, timeout time.Duration, stdout, stderr io.Writer) int {
	path := supervisor.ControlPath(cfg.Global.ControlSocket, cfg.Global.PIDFile)
	if path == "" {
		fmt.Fprintln(stderr, "sluice ctl: show bgp asks the master: set global.control_socket")
		return 1
	}
	r, _, err := supervisor.Control(path, supervisor.Request{Cmd: "show-bgp"}, timeout)
	if err == nil && !r.OK {
		err = errors.New(r.Error)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice ctl: %v\n", err)
		return 1
	}
	r.BGP.WriteText(stdout)
	return 0
}
