package conf

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// TestRuleItemsCoverEveryField: a change of any key of a rule shows in a
// reload's diff (ruleItems renders it), except the line it is on.
func TestRuleItemsCoverEveryField(t *testing.T) {
	actionOf := map[string]RuleAction{ // a field shown only for some actions
		"Status": ActionDeny, "Tarpit": ActionTarpit, "Location": ActionRedirect, "Scheme": ActionRedirect,
		"Port": ActionRedirect, "Code": ActionRedirect, "Name": ActionSetHeader, "Value": ActionSetHeader,
		"Response": ActionSetHeader, "HeaderVal": ActionDeny, "HasHeaderVal": ActionDeny,
	}
	typ := reflect.TypeFor[Rule]()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if f.Name == "Line" {
			continue
		}
		base := Rule{Action: ActionAllow, Header: "X-A"}
		if a, ok := actionOf[f.Name]; ok {
			base.Action = a
		}
		base.HasHeaderVal = f.Name == "HeaderVal" // the value counts only with its flag
		changed := base
		fv := reflect.ValueOf(&changed).Elem().Field(i)
		switch v := fv.Addr().Interface().(type) {
		case *[]netip.Prefix:
			*v = append(*v, netip.MustParsePrefix("10.0.0.0/8"))
		case *[]string:
			*v = append(*v, "GET")
		case *string:
			*v += "x"
		case *int:
			*v++
		case *bool:
			*v = !*v
		case **bool:
			b := true
			*v = &b
		case *time.Duration:
			*v += time.Second
		case *RuleAction:
			*v = ActionDeny
		default:
			t.Errorf("Rule.%s: type %s not covered by this test", f.Name, f.Type)
			continue
		}
		if reflect.DeepEqual(ruleItems([]Rule{base}), ruleItems([]Rule{changed})) {
			t.Errorf("a change of Rule.%s does not show in ruleItems: %q", f.Name, ruleItems([]Rule{base}))
		}
	}
}
