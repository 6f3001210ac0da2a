package conf

import (
	"net"
	"path/filepath"
	"strings"
)

// Process logs (the master's and the workers' own lines, not the access
// log): where they go and how they are written. The keys live in [global]
// and are decoded by rawLog, embedded in rawGlobal.

// LogFormat is how a process log line is written ("global.log_format").
type LogFormat string

// Log formats.
const (
	LogText LogFormat = "text" // logfmt: time=… level=INFO msg=… key=value
	LogJSON LogFormat = "json" // one JSON object a line: time, level, msg, keys
)

var logFormatNames = []LogFormat{LogText, LogJSON}

func (f LogFormat) String() string { return string(f) }

// UnmarshalText accepts "text", "json" and "" (text).
func (f *LogFormat) UnmarshalText(b []byte) error { return parseName(f, b, logFormatNames) }

// LogTarget is where process logs go ("global.log_target").
type LogTarget string

// Log targets.
const (
	LogStderr LogTarget = "stderr" // the journal under systemd
	LogSyslog LogTarget = "syslog" // log/syslog: the local daemon, or log_syslog_address
)

var logTargetNames = []LogTarget{LogStderr, LogSyslog}

func (t LogTarget) String() string { return string(t) }

// UnmarshalText accepts "stderr", "syslog" and "" (stderr).
func (t *LogTarget) UnmarshalText(b []byte) error { return parseName(t, b, logTargetNames) }

// SyslogFacility is the syslog facility of process logs
// ("global.log_syslog_facility"), by its name in syslog.conf.
type SyslogFacility string

// SyslogFacilityNames lists every facility, in their numeric order
// (RFC 5424 table 1, as log/syslog numbers them).
var SyslogFacilityNames = []SyslogFacility{"kern", "user", "mail", "daemon", "auth", "syslog",
	"lpr", "news", "uucp", "cron", "authpriv", "ftp",
	"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"}

func (f SyslogFacility) String() string { return string(f) }

// UnmarshalText accepts the names of SyslogFacilityNames and "" (daemon).
func (f *SyslogFacility) UnmarshalText(b []byte) error {
	return parseName(f, b, SyslogFacilityNames)
}

// Defaults of the process log keys.
const (
	DefaultLogFormat      = LogText
	DefaultLogTarget      = LogStderr
	DefaultSyslogFacility = SyslogFacility("daemon")
	DefaultSyslogTag      = "sluice"
)

// Logging is the process log settings, embedded in Global.
type Logging struct {
	LogFormat         LogFormat
	LogTarget         LogTarget
	LogSyslogAddress  string // NETWORK:ADDRESS as written; "": the local daemon (/dev/log)
	LogSyslogFacility SyslogFacility
	LogSyslogTag      string
}

type rawLog struct {
	LogFormat         choice[LogFormat, *LogFormat]           `toml:"log_format"`
	LogTarget         choice[LogTarget, *LogTarget]           `toml:"log_target"`
	LogSyslogAddress  string                                  `toml:"log_syslog_address"`
	LogSyslogFacility choice[SyslogFacility, *SyslogFacility] `toml:"log_syslog_facility"`
	LogSyslogTag      *string                                 `toml:"log_syslog_tag"`
}

var syslogNetworks = []string{"unixgram", "unix", "udp", "tcp"}

// logging validates the process log keys of [global].
func (v *validator) logging(r rawLog) Logging {
	v.refused("global.log_format", r.LogFormat.err)
	v.refused("global.log_target", r.LogTarget.err)
	v.refused("global.log_syslog_facility", r.LogSyslogFacility.err)
	l := Logging{
		LogFormat:         r.LogFormat.val,
		LogTarget:         r.LogTarget.val,
		LogSyslogFacility: r.LogSyslogFacility.val,
		LogSyslogTag:      DefaultSyslogTag,
	}
	if l.LogFormat == "" {
		l.LogFormat = DefaultLogFormat
	}
	if l.LogTarget == "" {
		l.LogTarget = DefaultLogTarget
	}
	if l.LogSyslogFacility == "" {
		l.LogSyslogFacility = DefaultSyslogFacility
	}
	if r.LogSyslogTag != nil {
		l.LogSyslogTag = *r.LogSyslogTag
		if !validTag(l.LogSyslogTag) {
			v.errf("global.log_syslog_tag", "%q is not a syslog tag; write 1 to 32 letters, digits or - _ . (the program name syslog shows), like \"sluice\"", l.LogSyslogTag)
		}
	}
	if a := r.LogSyslogAddress; a != "" {
		network, addr, _ := strings.Cut(a, ":")
		const how = "; write NETWORK:ADDRESS with NETWORK one of unixgram, unix, udp, tcp: \"unixgram:/dev/log\", \"udp:192.0.2.10:514\", \"tcp:logs.example.com:601\"; leave the key out for the local syslog daemon"
		switch network {
		case "unixgram", "unix":
			if !filepath.IsAbs(addr) {
				v.errf("global.log_syslog_address", "%q: a %s syslog socket is an absolute path%s", a, network, how)
			}
		case "udp", "tcp":
			if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
				v.errf("global.log_syslog_address", "%q: a %s syslog address is HOST:PORT%s", a, network, how)
			}
		default:
			v.errf("global.log_syslog_address", "%q does not start with a network%s", a, how)
		}
		l.LogSyslogAddress = a
	}
	if l.LogTarget != LogSyslog {
		for _, k := range []string{"log_syslog_address", "log_syslog_facility", "log_syslog_tag"} {
			if v.loc.defined("global." + k) {
				v.warnf("global."+k, "has no effect: process logs go to %s; set global.log_target = \"syslog\" to use it", l.LogTarget)
			}
		}
	}
	return l
}

// SyslogDial is log_syslog_address as log/syslog.Dial takes it: network
// and address, both "" for the local daemon.
func (l Logging) SyslogDial() (network, addr string) {
	network, addr, _ = strings.Cut(l.LogSyslogAddress, ":")
	return network, addr
}

// validTag keeps the tag a single RFC 3164 TAG field (at most 32
// alphanumerics; - _ . also pass every syslog daemon we know).
func validTag(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}
