package dashboard_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/commandtest"
)

// TestCommandInBrowser drives the asset page of the real command path
// (commandtest: NATS, simulated compressor, gateway, collector) in headless
// Chromium. An operator gets a form for the writable setpoint; its confirm
// step shows the current value and the point's write limits (screenshot);
// sending it gives a verified result, one write on the simulator and a
// line in the audit trail. A viewer sees the audit trail and no command
// form.
func TestCommandInBrowser(t *testing.T) {
	bin := requireChromium(t)
	shots := shotsDir(t)
	r := commandtest.Start(t)
	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, r.API+"/?token="+commandtest.OperatorToken+"#/asset/sim/ac-1")

	form := `document.querySelector('form.cmd[data-signal="unload_pressure_setpoint"]')`
	poll(t, jsErrs, 30*time.Second, "the operator's command form", func() bool {
		var ok bool
		_ = eval(tab, form+` !== null && !document.querySelector('[data-cmd-now]').textContent.includes('–')`, &ok)
		return ok
	}, nil)
	if err := eval(tab, form+`.elements.value.value = '0.7'; `+form+`.requestSubmit()`, nil); err != nil {
		t.Fatal(err)
	}
	var confirm map[string]string
	poll(t, jsErrs, 10*time.Second, "the confirm step", func() bool {
		confirm = nil
		_ = eval(tab, `(() => { const c = document.querySelector('#cmd-confirm:not([hidden]) .confirm'); if (!c) return null;
			const o = {now: c.querySelector('[data-confirm-now]').textContent, new: c.querySelector('[data-confirm-new]').textContent};
			for (const l of c.querySelectorAll('[data-limit]')) o[l.dataset.limit] = l.textContent; return o; })()`, &confirm)
		return confirm != nil
	}, nil)
	want := map[string]string{"now": "0.750 MPa", "new": "0.700 MPa", "min": "0.600 MPa", "max": "0.900 MPa", "max step": "0.100 MPa", "min interval": "no limit"}
	for k, v := range want {
		if confirm[k] != v {
			t.Errorf("confirm step %s = %q, want %q (all: %v)", k, confirm[k], v, confirm)
		}
	}
	screenshot(t, tab, shots, "20-command-confirm.png")
	before, _ := r.Fleet.Writes(commandtest.Asset)
	if err := eval(tab, `document.querySelector('#cmd-confirm [data-act=send]').click()`, nil); err != nil {
		t.Fatal(err)
	}
	var verdict string
	poll(t, jsErrs, 20*time.Second, "the verified result and its audit line", func() bool {
		_ = eval(tab, `(document.querySelector('#cmd-result .result')?.dataset.verdict || '') + ' ' +
			document.querySelectorAll('#a-audit tr[data-verdict="verified"]').length`, &verdict)
		return verdict == "verified 1"
	}, func() string { return verdict })
	if after, _ := r.Fleet.Writes(commandtest.Asset); after != before+1 {
		t.Errorf("%d writes for one command", after-before)
	}
	screenshot(t, tab, shots, "21-command-result.png")

	// a command the gateway refuses (above max and max_step; the form's own
	// max is bypassed): its audit line shows the value asked for under
	// "requested", nothing as written
	if err := eval(tab, form+`.elements.value.value = '0.95'; `+form+`.dispatchEvent(new Event('submit', {cancelable: true}))`, nil); err != nil {
		t.Fatal(err)
	}
	poll(t, jsErrs, 10*time.Second, "the confirm step of the refused command", func() bool {
		var ok bool
		_ = eval(tab, `document.querySelector('#cmd-confirm:not([hidden]) [data-act=send]') !== null`, &ok)
		return ok
	}, nil)
	if err := eval(tab, `document.querySelector('#cmd-confirm [data-act=send]').click()`, nil); err != nil {
		t.Fatal(err)
	}
	var refused []string
	poll(t, jsErrs, 20*time.Second, "the refused command's audit line", func() bool {
		refused = nil
		_ = eval(tab, `(() => { const tr = document.querySelector('#a-audit tr[data-verdict="rejected"]'); return tr ? [tr.children[4].textContent.trim(), tr.children[6].textContent] : null; })()`, &refused)
		return len(refused) == 2
	}, func() string { return fmt.Sprint(refused) })
	if refused[0] != "0.95 MPa" || refused[1] != "" {
		t.Errorf("refused command's audit line: requested %q, old → new %q; want \"0.95 MPa\" and nothing written", refused[0], refused[1])
	}
	// a failed write's record carries the value asked for as target, no new
	// value: the cell marks it as asked, never as written to the device
	var cell string
	if err := eval(tab, `changeCell({verdict: 'failed', old: 0.75, target: 0.95, unit: 'MPa', signal: 'unload_pressure_setpoint'})`, &cell); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cell, "0.950 MPa (asked)") || strings.Contains(cell, "→ 0.950") {
		t.Errorf("a failed write's old → new cell %q: want the target marked as asked", cell)
	}
	if after, _ := r.Fleet.Writes(commandtest.Asset); after != before+1 {
		t.Errorf("the refused command was written: %d writes in all, want 1", after-before)
	}

	// a viewer: the audit trail, no command form
	if err := eval(tab, `sessionStorage.setItem('smelter.token', '`+commandtest.ViewerToken+`'); location.reload()`, nil); err != nil {
		t.Fatal(err)
	}
	var seen string
	poll(t, jsErrs, 20*time.Second, "the viewer's asset page with the audit trail", func() bool {
		_ = eval(tab, `document.querySelectorAll('#a-audit tr[data-audit-id]').length + ' ' + document.querySelectorAll('form.cmd, #a-commands').length`, &seen)
		return strings.HasSuffix(seen, " 0") && !strings.HasPrefix(seen, "0 ")
	}, func() string { return seen })
	screenshot(t, tab, shots, "22-command-viewer.png")
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}
