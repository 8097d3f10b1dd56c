package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Viewport of every browser test (CSS pixels).
const (
	viewWidth  = 1440
	viewHeight = 1000
)

// findChromium returns the Chromium binary to drive: $SMELTER_CHROMIUM,
// Debian's /usr/bin/chromium, or one on PATH; "" when there is none.
func findChromium() string {
	if p := os.Getenv("SMELTER_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// requireChromium skips the test in -short mode or without Chromium, and
// returns the binary otherwise.
func requireChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	bin := findChromium()
	if bin == "" {
		t.Skip("no chromium binary found (install Debian's chromium package or set SMELTER_CHROMIUM); browser test skipped")
	}
	return bin
}

// jsErrors collects the page's uncaught exceptions.
type jsErrors struct {
	mu   sync.Mutex
	list []string
}

func (e *jsErrors) add(s string) {
	e.mu.Lock()
	e.list = append(e.list, s)
	e.mu.Unlock()
}

func (e *jsErrors) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

// startBrowser starts a headless Chromium through chromedp and returns the
// chromedp context of its page (the browser ends with the test) and the log
// of the page's uncaught JavaScript exceptions. The flags keep Chromium off
// the network except for the pages it is sent to (this machine's network is
// closed); chromedp talks to it over a pipe, not a debugging port, and gives
// it a fresh user-data-dir it removes afterwards with any leftover child.
func startBrowser(t *testing.T, bin string) (context.Context, *jsErrors) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], // headless, no-first-run, disable-background-networking, disable-sync
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(viewWidth, viewHeight),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing chromium: %v", err)
		}
		cancel()
		cancelAlloc() // waits for the process and removes the user-data-dir
	})
	errs := &jsErrors{}
	// Listen starts the browser and its page; the first Run must not carry
	// a timeout (it would bound the browser's life), so none is set here.
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok && e.ExceptionDetails != nil {
			msg := e.ExceptionDetails.Text
			if x := e.ExceptionDetails.Exception; x != nil {
				msg += " " + x.Description
			}
			errs.add(msg)
		}
	}); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(viewWidth, viewHeight)); err != nil {
		t.Fatalf("viewport: %v", err)
	}
	return ctx, errs
}

// eval evaluates a JavaScript expression (awaiting a promise) and decodes
// its JSON value into out (nil: ignored). Each call is bounded by 30 s.
func eval(ctx context.Context, expr string, out any) error {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out == nil {
		_, err := chromedp.Run(tctx, chromedp.Evaluate[chromedp.Void](expr, chromedp.EvalAwaitPromise))
		return err
	}
	raw, err := chromedp.Run(tctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// navigate loads url and waits for its load event.
func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate %s: %v", url, err)
	}
}

// screenshot saves the page as PNG, full width and the content's height
// (600 to 6000 CSS pixels), into dir and returns its path.
func screenshot(t *testing.T, ctx context.Context, dir, name string) string {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, func(ctx context.Context, tg *chromedp.Target) ([]byte, error) {
		lm, err := cdp.Call(ctx, tg, page.GetLayoutMetrics, cdp.Empty{})
		if err != nil {
			return nil, err
		}
		h := 600.0
		if lm.CSSContentSize != nil {
			h = min(max(lm.CSSContentSize.Height, 600), 6000)
		}
		beyond := true
		shot, err := cdp.Call(ctx, tg, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format: page.CaptureScreenshotFormatPng, CaptureBeyondViewport: &beyond,
			Clip: &page.Viewport{Width: viewWidth, Height: h, Scale: 1},
		})
		return shot.Data, err
	})
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if !strings.HasPrefix(string(png), "\x89PNG") {
		t.Fatalf("screenshot %s: not a PNG (%d bytes)", name, len(png))
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", p, len(png))
	return p
}
