package conf

import (
	"fmt"
	"strings"
	"text/template"

	sockaddr "github.com/hashicorp/go-sockaddr"
	socktmpl "github.com/hashicorp/go-sockaddr/template"
)

// expandTemplate renders a go-sockaddr template such as
// `{{ GetPrivateIP }}:80` with every function go-sockaddr offers, except that
// GetInterfaceIP also finds addresses that are not forwardable (see
// getInterfaceIP).
func expandTemplate(in string) (string, error) {
	addrs, err := sockaddr.GetAllInterfaces()
	if err != nil {
		return "", fmt.Errorf("cannot list this host's interface addresses: %w", err)
	}
	tmpl, err := template.New("bind").Option("missingkey=error").
		Funcs(socktmpl.SourceFuncs).
		Funcs(socktmpl.SortFuncs).
		Funcs(socktmpl.FilterFuncs).
		Funcs(socktmpl.HelperFuncs).
		Funcs(template.FuncMap{"GetInterfaceIP": getInterfaceIP}).
		Parse(in)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	if err := tmpl.Execute(&out, addrs); err != nil {
		return "", err
	}
	return out.String(), nil
}

// getInterfaceIP is go-sockaddr's GetInterfaceIP, which returns the first
// forwardable address of the named interface, falling back to its first
// address of any kind: go-sockaddr alone gives "" for `GetInterfaceIP "lo"`
// (loopback is not forwardable), and an operator who names an interface
// means its address.
func getInterfaceIP(name string) (string, error) {
	ip, err := sockaddr.GetInterfaceIP(name)
	if ip != "" || err != nil {
		return ip, err
	}
	all, err := sockaddr.GetAllInterfaces()
	if err != nil {
		return "", err
	}
	named, _, err := sockaddr.IfByName(name, all)
	if err != nil {
		return "", err
	}
	named, err = sockaddr.SortIfBy("+type,+size", named)
	if err != nil {
		return "", err
	}
	for _, a := range named {
		if ipa := sockaddr.ToIPAddr(a.SockAddr); ipa != nil {
			return (*ipa).NetIP().String(), nil
		}
	}
	return "", nil
}
