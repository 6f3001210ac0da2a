package conf_test

import (
	"strings"
	"testing"

	"sluice/conf"
)

// TestLoggingKeysRefusedTogether: every bad process log key is reported
// with its line and what is accepted, in one report.
func TestLoggingKeysRefusedTogether(t *testing.T) {
	errs := parseErrors(t, `[global]
log_format = "xml"
log_target = "journald"
log_syslog_facility = "local9"
log_syslog_tag = "my sluice"
log_syslog_address = "udp:logs.example"
`)
	checkProblems(t, errs, []want{
		{2, "global.log_format", `"xml" is not one of "text", "json"`},
		{3, "global.log_target", `"journald" is not one of "stderr", "syslog"`},
		{4, "global.log_syslog_facility", `"local9" is not one of "kern", "user"`},
		{5, "global.log_syslog_tag", `"my sluice" is not a syslog tag`},
		{6, "global.log_syslog_address", `a udp syslog address is HOST:PORT`},
	})
	for _, tc := range []struct{ addr, msg string }{
		{"unixgram:dev/log", "is an absolute path"},
		{"/dev/log", "does not start with a network"},
		{"tls:logs.example:6514", "does not start with a network"},
		{"tcp::601", "HOST:PORT"},
	} {
		errs := parseErrors(t, "[global]\nlog_target = \"syslog\"\nlog_syslog_address = \""+tc.addr+"\"\n")
		checkProblems(t, errs, []want{{3, "global.log_syslog_address", tc.msg}})
	}
}

func TestLoggingKeysDecoded(t *testing.T) {
	cfg := mustParse(t, `[global]
log_format = "json"
log_target = "syslog"
log_syslog_facility = "local3"
log_syslog_tag = "lb-1"
log_syslog_address = "udp:192.0.2.10:514"
`)
	want := conf.Logging{LogFormat: conf.LogJSON, LogTarget: conf.LogSyslog,
		LogSyslogAddress: "udp:192.0.2.10:514", LogSyslogFacility: "local3", LogSyslogTag: "lb-1"}
	if cfg.Global.Logging != want {
		t.Errorf("logging = %+v, want %+v", cfg.Global.Logging, want)
	}
	if n, a := want.SyslogDial(); n != "udp" || a != "192.0.2.10:514" {
		t.Errorf("SyslogDial = %q, %q", n, a)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}
	// The syslog keys without log_target = "syslog" do nothing: say so.
	cfg = mustParse(t, "[global]\nlog_syslog_tag = \"lb-1\"\n")
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Key != "global.log_syslog_tag" || !strings.Contains(cfg.Warnings[0].Msg, `log_target = "syslog"`) {
		t.Errorf("warnings = %v, want one about log_syslog_tag", cfg.Warnings)
	}
}
