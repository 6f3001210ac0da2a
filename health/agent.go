package health

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	"sluice/conf"
)

// AgentReply is what an agent said, HAProxy's agent-check: one line of
// words separated by spaces or commas, such as "up", "drain", "75%" or
// "ready up 50%".
type AgentReply struct {
	Health   string          // "up", "down" or "" when the agent did not say
	Admin    conf.AdminState // when HasAdmin
	HasAdmin bool            // the agent said ready, drain or maint
	Weight   int             // percent of the configured weight, or -1 when not said
}

func (a AgentReply) String() string {
	var w []string
	if a.Health != "" {
		w = append(w, a.Health)
	}
	if a.HasAdmin {
		w = append(w, a.Admin.String())
	}
	if a.Weight >= 0 {
		w = append(w, strconv.Itoa(a.Weight)+"%")
	}
	return strings.Join(w, " ")
}

// maxAgentLine bounds the line an agent may send.
const maxAgentLine = 512

// ParseAgent reads an agent's line. Words it does not know are an error, so
// that a misconfigured agent shows up on the stats page instead of being
// taken for "up".
func ParseAgent(line string) (AgentReply, error) {
	a := AgentReply{Weight: -1}
	words := strings.FieldsFunc(strings.ToLower(line), func(r rune) bool {
		return r == ' ' || r == ',' || r == '\t' || r == '\r' || r == '\n'
	})
	if len(words) == 0 {
		return a, fmt.Errorf("empty reply")
	}
	for _, w := range words {
		switch w {
		case "up":
			a.Health = "up"
		case "down", "fail", "failed", "stopped":
			a.Health = "down"
		default:
			if st, err := conf.ParseAdminState(w); err == nil {
				a.Admin, a.HasAdmin = st, true
				continue
			}
			pct, ok := strings.CutSuffix(w, "%")
			n, err := strconv.Atoi(pct)
			if !ok || err != nil || n < 0 || n > 100 {
				return a, fmt.Errorf("unknown word %q", w)
			}
			a.Weight = n
		}
	}
	return a, nil
}

func probeAgent(e *env, spec *Spec) Result {
	c, err := dial(e, "tcp", spec.agentAddr(), conf.ProxyNone, nil)
	if err != nil {
		return fail(err)
	}
	defer c.abort()
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxAgentLine), maxAgentLine).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return Result{Desc: "agent: " + describe(err)}
	}
	a, err := ParseAgent(line)
	if err != nil {
		return Result{Desc: fmt.Sprintf("agent: %v in %q", err, strings.TrimSpace(line))}
	}
	return Result{OK: a.Health != "down", Desc: "agent: " + a.String(), Agent: &a}
}
