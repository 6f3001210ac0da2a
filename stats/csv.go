package stats

import (
	"encoding/csv"
	"net/http"
	"strconv"
)

// csvColumns are the CSV columns: HAProxy's names and order where sluice
// has the figure, then sluice's own. The header line starts with "# " as
// HAProxy's does.
var csvColumns = []string{
	"pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout",
	"dreq", "dresp", "ereq", "econ", "eresp", "wretr", "wredis", "status", "weight", "act", "bck",
	"chkfail", "chkdown", "lastchg", "downtime", "pid", "type", "rate", "rate_max",
	"check_status", "check_code", "check_duration",
	"hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other", "req_tot",
	"last_chk", "mode", "addr", "conf_weight", "qtot", "qtimeouts",
}

// rowTypes are HAProxy's numbers for the type column.
var rowTypes = map[string]string{"frontend": "0", "backend": "1", "server": "2"}

func (s *Server) serveCSV(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	snap := s.snapshot()
	cw := csv.NewWriter(w)
	hdr := append([]string{}, csvColumns...)
	hdr[0] = "# " + hdr[0]
	cw.Write(hdr)
	pid := strconv.Itoa(snap.Process.PID)
	for _, f := range snap.Frontends {
		cw.Write(csvRecord(&f, pid))
	}
	for _, b := range snap.Backends {
		for _, sv := range b.Servers {
			cw.Write(csvRecord(&sv, pid))
		}
		cw.Write(csvRecord(&b, pid))
	}
	cw.Flush()
}

func csvRecord(r *Row, pid string) []string {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	server := r.Type == "server"
	backendOrServer := r.Type != "frontend"
	opt := func(ok bool, v string) string {
		if ok {
			return v
		}
		return ""
	}
	var chkStatus, chkCode, chkDur, lastChk string
	if r.Check != nil {
		chkStatus = r.Check.Desc
		if r.Check.Code != 0 {
			chkCode = strconv.Itoa(r.Check.Code)
		}
		chkDur = strconv.FormatInt(int64(r.Check.Duration+0.5), 10)
		lastChk = r.Check.Desc
	}
	slim := ""
	if r.SLim > 0 {
		slim = i(r.SLim)
	}
	http := func(v uint64) string { return opt(r.HTTP, u(v)) }
	return []string{
		r.Proxy, r.Name,
		opt(backendOrServer, i(r.QCur)), opt(backendOrServer, i(r.QMax)),
		i(r.SCur), opt(r.Type != "backend", i(r.SMax)), slim, u(r.STot), u(r.BytesIn), u(r.BytesOut),
		opt(!server, u(r.DReq)), opt(!server, "0"), opt(r.Type == "frontend", u(r.EReq)),
		u(r.ECon), opt(backendOrServer, u(r.EResp)), opt(backendOrServer, u(r.Retries)), opt(backendOrServer, "0"),
		r.Status, opt(backendOrServer, i(r.Weight)), opt(backendOrServer, i(r.Active)), opt(backendOrServer, i(r.Backup)),
		opt(backendOrServer, u(r.ChkFail)), opt(backendOrServer, u(r.ChkDown)),
		opt(server, i(r.LastChange)), opt(server, i(r.Downtime)),
		pid, rowTypes[r.Type], u(r.Rate), u(r.RateMax),
		chkStatus, chkCode, chkDur,
		http(r.Resp[1]), http(r.Resp[2]), http(r.Resp[3]), http(r.Resp[4]), http(r.Resp[5]), http(r.Resp[0]), http(r.ReqTot),
		lastChk, r.Mode, r.Addr, opt(backendOrServer, i(r.ConfWeight)),
		opt(r.Type == "backend", u(r.QTotal)), opt(r.Type == "backend", u(r.QTimeout)),
	}
}
