package main

import (
	"strings"
	"testing"
)

// Roff turns the shapes the CLI prints into man(7): entries with a
// description on the head line or below, a deeper sub-list kept line by
// line, trailing prose, and flag lists in package flag's format or after
// a "usage:" line; text starting with a dot cannot become a request.
func TestRoff(t *testing.T) {
	general := `usage: sluice <command> [flags]

commands:
  run -f FILE
                   run the load balancer
  stop [-drain]    stop the master
  ctl CMD          talk to a running sluice:
                     show stat
                     set weight B/S N

.hidden files are read too; see docs\reference.md.
`
	sub := map[string]string{
		"run": "Usage of run:\n  -f string\n    \tconfiguration file (default \"/etc/sluice/sluice.toml\")\n  -x\tone-letter bool\n",
		"ctl": "usage: sluice ctl [-f FILE] COMMAND\n  show stat        frontends\n",
	}
	if got := Commands(general); strings.Join(got, ",") != "run,stop,ctl" {
		t.Errorf("Commands: %v", got)
	}
	got := Roff(general, sub, "1.0", "2024-01-02")
	for _, want := range []string{
		`.TH SLUICE 1 "2024\-01\-02" "sluice 1.0" "User Commands"`,
		".SH SYNOPSIS\n\\fBsluice\\fR \\fI<command>\\fR \\fB[flags]\\fR\n",
		".TP\n\\fBrun\\fR \\fB\\-f\\fR \\fIFILE\\fR\nrun the load balancer\n",
		".TP\n\\fBstop\\fR \\fB[\\-drain]\\fR\nstop the master\n",
		"talk to a running sluice:\n.br\nshow stat\n.br\nset weight B/S N\n",
		".PP\n\\&.hidden files are read too; see docs\\ereference.md.\n",
		".SS sluice run\n.TP\n\\fB\\-f\\fR \\fIstring\\fR\nconfiguration file (default \"/etc/sluice/sluice.toml\")\n",
		".TP\n\\fB\\-x\\fR\none\\-letter bool\n",
		".SS sluice ctl\n.PP\n\\fBsluice\\fR \\fBctl\\fR \\fB[\\-f\\fR \\fIFILE\\fR] \\fICOMMAND\\fR\n.PP\n.nf\n  show stat        frontends\n.fi\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("roff lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, ".SS sluice stop") {
		t.Errorf("a command without -h output got an OPTIONS subsection:\n%s", got)
	}
}
