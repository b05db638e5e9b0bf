package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
)

// harnessTB is a minimal implementation of ktesting.TB (the subset of
// testing.TB that k8s.io/kubernetes/test/utils/ktesting needs) for use
// outside of "go test". It is what StartTestServer gets instead of a
// *testing.T:
//
//   - Log/Logf go to stderr (only errors unless verbose is set),
//   - Error/Errorf record a failure and are always printed,
//   - Fatal/FailNow/Skip record a failure and end the calling goroutine
//     with runtime.Goexit, exactly like testing.T does (callers run
//     StartTestServer on a dedicated goroutine, see runGuarded),
//   - Cleanup callbacks are collected and run in LIFO order by
//     runCleanups when the harness shuts down,
//   - TempDir creates directories below the harness' root temp dir, which
//     is removed as a whole on exit.
type harnessTB struct {
	rootDir string
	verbose bool

	mu         sync.Mutex
	failed     bool
	firstError string
	cleanups   []func()
	tempCount  int
}

func newHarnessTB(rootDir string, verbose bool) *harnessTB {
	return &harnessTB{rootDir: rootDir, verbose: verbose}
}

func (t *harnessTB) Helper() {}

func (t *harnessTB) Name() string { return "opsplane-e2e-harness" }

func (t *harnessTB) Attr(key, value string) {
	t.Logf("attr %s=%s", key, value)
}

func (t *harnessTB) Chdir(dir string) {
	old, err := os.Getwd()
	if err != nil {
		t.Fatalf("chdir: %v", err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatalf("chdir %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = os.Chdir(old) })
}

func (t *harnessTB) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	if err := os.Setenv(key, value); err != nil {
		t.Fatalf("setenv %s: %v", key, err)
	}
	t.Cleanup(func() {
		if had {
			_ = os.Setenv(key, old)
		} else {
			_ = os.Unsetenv(key)
		}
	})
}

func (t *harnessTB) TempDir() string {
	t.mu.Lock()
	t.tempCount++
	n := t.tempCount
	t.mu.Unlock()
	dir, err := os.MkdirTemp(t.rootDir, fmt.Sprintf("tb-%03d-", n))
	if err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	return dir
}

func (t *harnessTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

// runCleanups runs the registered cleanup callbacks, last registered first.
// Callbacks registered while cleaning up run too.
func (t *harnessTB) runCleanups() {
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil {
					logf("cleanup panicked: %v", r)
				}
			}()
			f()
		}()
	}
}

func (t *harnessTB) Log(args ...any) { t.emit(false, fmt.Sprintln(args...)) }

func (t *harnessTB) Logf(format string, args ...any) {
	t.emit(false, fmt.Sprintf(format, args...))
}

func (t *harnessTB) Error(args ...any) {
	t.recordFailure(fmt.Sprintln(args...))
}

func (t *harnessTB) Errorf(format string, args ...any) {
	t.recordFailure(fmt.Sprintf(format, args...))
}

func (t *harnessTB) Fail() { t.recordFailure("") }

func (t *harnessTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *harnessTB) FailNow() {
	t.recordFailure("")
	runtime.Goexit()
}

func (t *harnessTB) Fatal(args ...any) {
	t.recordFailure(fmt.Sprintln(args...))
	runtime.Goexit()
}

func (t *harnessTB) Fatalf(format string, args ...any) {
	t.recordFailure(fmt.Sprintf(format, args...))
	runtime.Goexit()
}

func (t *harnessTB) Skip(args ...any) {
	t.recordFailure("skipped: " + fmt.Sprintln(args...))
	runtime.Goexit()
}

func (t *harnessTB) Skipf(format string, args ...any) {
	t.recordFailure("skipped: " + fmt.Sprintf(format, args...))
	runtime.Goexit()
}

func (t *harnessTB) SkipNow() {
	t.recordFailure("skipped")
	runtime.Goexit()
}

func (t *harnessTB) Skipped() bool { return false }

func (t *harnessTB) recordFailure(msg string) {
	msg = strings.TrimRight(msg, "\n")
	t.mu.Lock()
	t.failed = true
	if t.firstError == "" && msg != "" {
		t.firstError = msg
	}
	t.mu.Unlock()
	if msg != "" {
		t.emit(true, "ERROR: "+msg)
	}
}

func (t *harnessTB) firstFailure() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.firstError == "" {
		return "unknown failure"
	}
	return t.firstError
}

// emit writes one log entry to stderr. Outside verbose mode only errors
// are written: explicit Error* calls and klog-formatted error lines
// ("E1122 18:04:05.000000 ...") coming from the ktesting logger that
// kube-apiserver uses as its contextual logger.
func (t *harnessTB) emit(isError bool, msg string) {
	if !t.verbose && !isError && !isKlogErrorLine(msg) {
		return
	}
	msg = strings.TrimRight(msg, "\n")
	fmt.Fprintf(os.Stderr, "[apiserver] %s\n", msg)
}

func isKlogErrorLine(msg string) bool {
	return len(msg) > 1 && (msg[0] == 'E' || msg[0] == 'F') && msg[1] >= '0' && msg[1] <= '9'
}

// runGuarded runs f on a new goroutine and reports how it ended: nil if f
// returned normally, otherwise an error describing the panic or the
// Fatal/FailNow (runtime.Goexit) that ended it.
func runGuarded(t *harnessTB, f func()) <-chan error {
	done := make(chan error, 1)
	go func() {
		finished := false
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v", r)
				return
			}
			if !finished {
				done <- fmt.Errorf("aborted: %s", t.firstFailure())
				return
			}
			done <- nil
		}()
		f()
		finished = true
	}()
	return done
}
