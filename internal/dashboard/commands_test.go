package dashboard_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestCommandEndpointsWithoutService: a collector without a commands:
// block tells every caller it is a viewer that may not command; a command
// from the viewers' token is 403 before anything else, the audit trail is
// 503 naming the missing block, bad parameters are 400 naming them.
func TestCommandEndpointsWithoutService(t *testing.T) {
	f := newFixture(t, "view-tok")
	for _, c := range []struct {
		method, path, token, body string
		code                      int
		want                      string
	}{
		{"GET", "/api/v1/session", "view-tok", "", 200, `{"role":"viewer","commands":false,"audit":false}`},
		{"GET", "/api/v1/session", "", "", 401, "missing or wrong bearer token"},
		{"POST", "/api/v1/assets/site1/ac-1/commands", "view-tok", `{"signal":"unload_pressure_setpoint","value":0.7}`, 403, "viewers cannot send commands"},
		{"POST", "/api/v1/assets/site1/ac-1/commands", "wrong", `{}`, 401, "missing or wrong bearer token"},
		{"GET", "/api/v1/assets/site1/ac-1/audit", "view-tok", "", 503, "no commands: block"},
		{"GET", "/api/v1/assets/site1/ac-1/audit?before=x", "view-tok", "", 400, `before: \"x\" is not a stream sequence`},
		{"GET", "/api/v1/assets/site1/ac-1/audit?limit=0", "view-tok", "", 400, "limit"},
		{"GET", "/api/v1/assets/site1/ac-1/commands", "view-tok", "", 404, "no such endpoint"},
	} {
		req, _ := http.NewRequest(c.method, f.srv.URL+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := new(strings.Builder)
		_, _ = io.Copy(buf, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(buf.String(), c.want) {
			t.Errorf("%s %s (%s): %d %s, want %d %q", c.method, c.path, c.token, resp.StatusCode, buf, c.code, c.want)
		}
	}
}
