package stats

import (
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"

	"sluice/health"
)

// csvColumns are HAProxy 2.6's `show stat` columns in its order, including
// the "-" separator and the columns of its ssl, h2 and h1 modules, so that
// scripts reading by position find each figure where HAProxy puts it.
// Columns sluice has no figure for stay empty. Every line ends with a comma,
// as HAProxy's do. TestCSVLayoutIsHAProxys compares with a real HAProxy.
var csvColumns = strings.Split("pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"+
	"wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,"+
	"tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,"+
	"hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,"+
	"comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,"+
	"agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,"+
	"agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,"+
	"reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,"+
	"idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"+
	"agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,"+
	"h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,"+
	"h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,"+
	"h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,"+
	"h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,"+
	"h1_spliced_bytes_in,h1_spliced_bytes_out,", ",")

// csvCol is the position of each column.
var csvCol = func() map[string]int {
	m := make(map[string]int, len(csvColumns))
	for i, c := range csvColumns {
		m[c] = i
	}
	return m
}()

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
	// iid numbers the proxies as HAProxy does (frontends, then backends);
	// sid numbers a backend's servers from 1.
	iid := 0
	for _, f := range snap.Frontends {
		iid++
		cw.Write(csvRecord(&f, pid, iid, 0, ""))
	}
	for _, b := range snap.Backends {
		iid++
		algo := ""
		if be := s.backends[b.Proxy]; be != nil {
			algo = be.Balance().String()
		}
		for i, sv := range b.Servers {
			cw.Write(csvRecord(&sv, pid, iid, i+1, ""))
		}
		cw.Write(csvRecord(&b, pid, iid, 0, algo))
	}
	cw.Flush()
}

// csvRecord is one CSV line of r. Which columns a frontend, backend or
// server fills follows HAProxy: a frontend has no queue or weight, a server
// no dreq, a backend no chkfail.
func csvRecord(r *Row, pid string, iid, sid int, algo string) []string {
	rec := make([]string, len(csvColumns))
	set := func(col, v string) { rec[csvCol[col]] = v }
	u := func(col string, v uint64) { set(col, strconv.FormatUint(v, 10)) }
	i := func(col string, v int64) { set(col, strconv.FormatInt(v, 10)) }
	fe, be, sv := r.Type == "frontend", r.Type == "backend", r.Type == "server"

	set("pxname", r.Proxy)
	set("svname", r.Name)
	set("status", r.Status)
	set("pid", pid)
	i("iid", int64(iid))
	i("sid", int64(sid))
	set("type", rowTypes[r.Type])
	set("mode", r.Mode)
	set("-", "-") // HAProxy's marker between its own columns and its modules'
	i("scur", r.SCur)
	i("smax", r.SMax)
	if r.SLim > 0 {
		i("slim", r.SLim)
	}
	u("stot", r.STot)
	u("bin", r.BytesIn)
	u("bout", r.BytesOut)
	u("econ", r.ECon)
	u("rate", r.Rate)
	u("rate_max", r.RateMax)
	if !sv {
		u("dreq", r.DReq)
		set("dresp", "0")
	}
	if fe {
		u("ereq", r.EReq)
		u("conn_tot", r.STot)
		u("conn_rate", r.Rate)
		u("conn_rate_max", r.RateMax)
	} else {
		i("qcur", r.QCur)
		i("qmax", r.QMax)
		u("eresp", r.EResp)
		u("wretr", r.Retries)
		set("wredis", "0")
		i("weight", r.Weight)
		i("uweight", r.UWeight)
		i("act", r.Active)
		i("bck", r.Backup)
		u("chkdown", r.ChkDown)
		i("lastchg", r.LastChange)
		i("downtime", r.Downtime)
		u("lbtot", r.STot)
	}
	if sv {
		set("addr", r.Addr)
		if r.Status != "no check" {
			u("chkfail", r.ChkFail)
		}
	}
	if be {
		set("algo", algo)
	}
	if r.HTTP {
		u("hrsp_1xx", r.Resp[1])
		u("hrsp_2xx", r.Resp[2])
		u("hrsp_3xx", r.Resp[3])
		u("hrsp_4xx", r.Resp[4])
		u("hrsp_5xx", r.Resp[5])
		u("hrsp_other", r.Resp[0])
		u("req_tot", r.ReqTot)
		if !fe {
			u("cli_abrt", r.CliAbrt)
			u("srv_abrt", r.SrvAbrt)
		}
	}
	if c := r.Check; c != nil {
		status, desc := checkStatus(c)
		set("check_status", status)
		if c.Code != 0 {
			i("check_code", int64(c.Code))
		}
		i("check_duration", int64(c.Duration+0.5))
		set("last_chk", c.Desc)
		set("check_desc", desc)
	}
	return rec
}

// checkStatus is HAProxy's check_status code for c and its check_desc
// wording: scripts compare the code ("L4OK", "L7STS"), so the detail
// sluice has (c.Desc) goes to last_chk only. Checks with an answer (http,
// dns, udp, agent) are layer 7; a failure with no answer is L4TOUT or
// L4CON, one with an answer that does not pass L7STS (a status) or L7RSP;
// a TLS handshake with the server that failed is L6RSP, or L6TOUT.
func checkStatus(c *CheckResult) (string, string) {
	d := c.Desc
	switch {
	case c.OK && d == "L4OK":
		return "L4OK", "Layer4 check passed"
	case c.OK:
		return "L7OK", "Layer7 check passed"
	case c.Code != 0:
		return "L7STS", "Layer7 wrong status"
	case strings.HasPrefix(d, health.TLSPrefix+"timeout"):
		return "L6TOUT", "Layer6 timeout"
	case strings.HasPrefix(d, health.TLSPrefix):
		return "L6RSP", "Layer6 invalid response"
	case strings.HasPrefix(d, "no UDP reply"):
		return "L7TOUT", "Layer7 timeout"
	case strings.Contains(d, "timeout"):
		return "L4TOUT", "Layer4 timeout"
	case strings.HasPrefix(d, "bad HTTP response"), strings.Contains(d, "before a response"),
		strings.Contains(d, " lacks "), strings.HasPrefix(d, "agent:"):
		return "L7RSP", "Layer7 invalid response"
	}
	return "L4CON", "Layer4 connection problem"
}
