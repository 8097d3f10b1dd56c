package secret

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// URLRules is how URLProblems reads a broker URL field.
type URLRules struct {
	// Scheme is prepended to a URL without "://", as the client does
	// (nats.go reads a bare host:port as nats://host:port); "" refuses a
	// URL without a scheme.
	Scheme string
	// Schemes are the schemes accepted; nil accepts any.
	Schemes []string
	// Example is a URL of the form expected ("nats://host:4222").
	Example string
	// Instead names the settings that take credentials
	// ("username and password_env or password_file, token_file or
	// creds_file").
	Instead string
}

// URLProblems returns one reason for every URL of raw (a comma-separated
// list; "" has none) that does not parse, has no host, has a scheme that
// r does not accept, or carries user information (user:password@ or
// token@, which the clients accept and which every connection error and
// reconnect would log). A reason names the URL by its place in the list
// ("URL 2 of the list") and never quotes it or its credentials.
func URLProblems(raw string, r URLRules) []string {
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	var out []string
	for i, u := range strings.Split(raw, ",") {
		u = strings.TrimSpace(u)
		if r.Scheme != "" && !strings.Contains(u, "://") {
			u = r.Scheme + "://" + u
		}
		p, err := url.Parse(u)
		switch {
		case err != nil || p.Host == "":
			out = append(out, fmt.Sprintf("URL %d of the list is not a URL like %s", i+1, r.Example))
			continue
		case r.Schemes != nil && !slices.Contains(r.Schemes, p.Scheme):
			out = append(out, fmt.Sprintf("scheme %q of URL %d of the list is not %s", logScheme(p.Scheme), i+1, orList(r.Schemes)))
		}
		if p.User != nil {
			out = append(out, fmt.Sprintf("credentials in the URL are not allowed (URL %d of the list); use %s", i+1, r.Instead))
		}
	}
	return out
}

// logScheme is a scheme cut for an error message (a scheme holds no
// credential, but it is text of the configuration's choosing).
func logScheme(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// orList joins ss as "a, b or c".
func orList(ss []string) string {
	if len(ss) < 2 {
		return strings.Join(ss, "")
	}
	return strings.Join(ss[:len(ss)-1], ", ") + " or " + ss[len(ss)-1]
}

// RedactURL returns raw (a URL or a comma-separated list) for logs and
// errors: the user information of every URL, a password or a token,
// replaced by "redacted", and its query, which no broker client reads as a
// credential but which may hold one (?password=...), replaced whole by
// "redacted", and so is a fragment; a URL that does not parse is replaced
// whole when it holds an '@', '?' or '#'.
func RedactURL(raw string) string {
	if !strings.ContainsAny(raw, "@?#") {
		return raw
	}
	us := strings.Split(raw, ",")
	for i, s := range us {
		if !strings.ContainsAny(s, "@?#") {
			continue
		}
		t := strings.TrimSpace(s)
		bare := !strings.Contains(t, "://")
		if bare {
			t = "nats://" + t
		}
		p, err := url.Parse(t)
		if err != nil {
			us[i] = "(a URL that does not parse)"
			continue
		}
		if p.User != nil {
			p.User = url.User("redacted")
		}
		if p.RawQuery != "" || p.ForceQuery {
			p.RawQuery, p.ForceQuery = "redacted", false
		}
		if p.Fragment != "" {
			p.Fragment, p.RawFragment = "redacted", ""
		}
		us[i] = p.String()
		if bare {
			us[i] = strings.TrimPrefix(us[i], "nats://")
		}
	}
	return strings.Join(us, ",")
}
