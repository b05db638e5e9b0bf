// Command opsplane-e2e-harness starts a real Kubernetes API server for the
// opsplane end-to-end tests: an embedded etcd plus kube-apiserver from
// k8s.io/kubernetes, started through the same test server the Kubernetes
// project's integration tests use (cmd/kube-apiserver/app/testing).
//
// It writes an admin kubeconfig, prints one READY line on stdout when the
// server is usable and shuts everything down (removing all temp files) on
// SIGTERM/SIGINT/SIGHUP or, with --exit-on-stdin-eof, when stdin closes.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kubeapiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
)

// kubeVersion is the k8s.io/kubernetes release this harness is built from
// (see go.mod); it must stay in step with the k8s-openapi feature used on
// the Rust side.
const kubeVersion = "v1.37.2"

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type options struct {
	kubeconfigOut  string
	exitOnStdinEOF bool
	bind           string
	startupTimeout time.Duration
	authzMode      string
	apiserverArgs  stringList
	verbose        bool
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[harness] "+format+"\n", args...)
}

func main() {
	os.Exit(run())
}

func parseFlags() (*options, error) {
	o := &options{}
	// flag.CommandLine already has -v/-vmodule (klog verbosity), registered
	// by k8s.io/kubernetes/test/utils/ktesting.
	fs := flag.CommandLine
	fs.StringVar(&o.kubeconfigOut, "kubeconfig-out", "", "write the admin kubeconfig to this path (required)")
	fs.BoolVar(&o.exitOnStdinEOF, "exit-on-stdin-eof", false, "also shut down cleanly when stdin reaches EOF")
	fs.StringVar(&o.bind, "bind", "127.0.0.1", "IP address to serve on; anything but 127.0.0.1 adds a TCP forwarder on that address (0.0.0.0 = all)")
	fs.DurationVar(&o.startupTimeout, "startup-timeout", 120*time.Second, "give up if the API server is not ready within this time")
	fs.StringVar(&o.authzMode, "authorization-mode", "Node,RBAC", "kube-apiserver --authorization-mode (empty = test server default, AlwaysAllow)")
	fs.Var(&o.apiserverArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--disable-admission-plugins=ServiceAccount (repeatable)")
	fs.BoolVar(&o.verbose, "verbose", false, "log kube-apiserver and etcd info and warning messages to stderr (default: errors only)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s --kubeconfig-out PATH [flags]\n\n"+
			"Starts etcd + kube-apiserver %s and prints\n"+
			"  READY {\"kubeconfig\":\"<path>\",\"server\":\"https://127.0.0.1:<port>\"}\n"+
			"on stdout once the server is ready.\n\nFlags:\n", os.Args[0], kubeVersion)
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.kubeconfigOut == "" {
		return nil, errors.New("--kubeconfig-out is required")
	}
	abs, err := filepath.Abs(o.kubeconfigOut)
	if err != nil {
		return nil, err
	}
	o.kubeconfigOut = abs
	if st, err := os.Stat(filepath.Dir(abs)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--kubeconfig-out: directory %s does not exist", filepath.Dir(abs))
	}
	if err := validateAPIServerArgs(o.apiserverArgs); err != nil {
		return nil, fmt.Errorf("--apiserver-arg: %w", err)
	}
	if net.ParseIP(o.bind) == nil {
		return nil, fmt.Errorf("--bind %q is not an IP address", o.bind)
	}
	return o, nil
}

// validateAPIServerArgs parses the extra kube-apiserver flags against
// kube-apiserver's flag set, so that a typo fails fast with a short message
// (the test server's own flag set panics and prints its whole usage).
func validateAPIServerArgs(args []string) error {
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range apiserveroptions.NewServerRunOptions().Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("not a flag: %v", fs.Args())
	}
	return nil
}

// configureKlog keeps klog quiet: only errors reach stderr unless
// --verbose is given (kube-apiserver logs dozens of harmless warnings at
// startup, e.g. "Skipping API ... because it has no resources").
func configureKlog(verbose bool) {
	var kfs flag.FlagSet
	klog.InitFlags(&kfs)
	threshold := "ERROR"
	if verbose {
		threshold = "INFO"
	}
	for k, v := range map[string]string{
		"logtostderr":                      "true",
		"legacy_stderr_threshold_behavior": "false",
		"stderrthreshold":                  threshold,
	} {
		if err := kfs.Set(k, v); err != nil {
			logf("klog flag %s: %v", k, err)
		}
	}
}

// protectStdout keeps the real stdout for the READY line only and points
// file descriptor 1 at stderr, so that nothing else can end up on stdout.
func protectStdout() (*os.File, error) {
	fd, err := unix.FcntlInt(1, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("dup stdout: %w", err)
	}
	if err := unix.Dup2(2, 1); err != nil {
		return nil, fmt.Errorf("redirect stdout: %w", err)
	}
	return os.NewFile(uintptr(fd), "ready-stdout"), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func run() int {
	opts, err := parseFlags()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "opsplane-e2e-harness: %v\n", err)
		return 2
	}
	configureKlog(opts.verbose)
	if v := version.Get().GitVersion; v != kubeVersion {
		logf("warning: kube-apiserver reports version %q, not %s: build with scripts/build-e2e-tools.sh "+
			"(it sets -ldflags -X k8s.io/component-base/version.gitVersion=...), or helm's kubeVersion checks may fail", v, kubeVersion)
	}
	readyOut, err := protectStdout()
	if err != nil {
		logf("error: %v", err)
		return 1
	}

	// Everything the harness, etcd and kube-apiserver write goes below one
	// root dir: TMPDIR is pointed there so the test server's own temp dirs
	// (os.MkdirTemp("", ...)) land inside it as well.
	rootDir, err := os.MkdirTemp("", "opsplane-e2e-harness-")
	if err != nil {
		logf("error: create temp dir: %v", err)
		return 1
	}
	_ = os.Setenv("TMPDIR", rootDir)
	// The test server derives a fixture directory from its source path,
	// which is relative in a -trimpath build and then makes it fail. It
	// honours Bazel's TEST_SRCDIR/TEST_WORKSPACE to build an absolute path;
	// the fixtures are never used because we pass our own serving cert.
	if os.Getenv("TEST_SRCDIR") == "" {
		_ = os.Setenv("TEST_SRCDIR", "/")
		_ = os.Setenv("TEST_WORKSPACE", ".")
	}

	stop := make(chan string, 4)
	sigCh := make(chan os.Signal, 1)
	signal.Notify(sigCh, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		s := <-sigCh
		stop <- "received " + s.String()
	}()
	if opts.exitOnStdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- "stdin reached EOF"
		}()
	}

	h := &harness{opts: opts, rootDir: rootDir, tb: newHarnessTB(rootDir, opts.verbose)}
	h.saKeysBefore = listSAKeyFiles()
	// kube-apiserver calls klog.Fatal in a few places, e.g. when a post-start
	// hook fails, which is what happens when its context is canceled during
	// startup. While we shut down, park such goroutines instead of exiting
	// so that cleanup completes; otherwise clean up before exiting.
	klog.OsExit = func(code int) {
		if h.stopping.Load() {
			select {}
		}
		logf("error: fatal error in kube-apiserver (see above), exiting")
		h.removeTempFiles()
		os.Exit(code)
	}
	start := time.Now()
	deadline := start.Add(opts.startupTimeout)

	startDone := make(chan error, 1)
	go func() { startDone <- h.start(deadline) }()

	exitCode := 0
	select {
	case err := <-startDone:
		if err != nil {
			logf("error: startup failed: %v", err)
			h.shutdown()
			return 1
		}
	case reason := <-stop:
		logf("%s during startup, shutting down", reason)
		h.abortStartup(startDone)
		return 0
	case <-time.After(time.Until(deadline) + 5*time.Second):
		logf("error: API server not ready after %s", opts.startupTimeout)
		h.abortStartup(startDone)
		return 1
	}

	line, _ := json.Marshal(struct {
		Kubeconfig string `json:"kubeconfig"`
		Server     string `json:"server"`
	}{opts.kubeconfigOut, h.serverURL})
	if _, err := fmt.Fprintf(readyOut, "READY %s\n", line); err != nil {
		logf("error: write READY line: %v", err)
		exitCode = 1
	} else {
		_ = readyOut.Sync()
		logf("ready in %.1fs: %s (kube-apiserver %s)", time.Since(start).Seconds(), h.serverURL, kubeVersion)
	}

	if exitCode == 0 {
		select {
		case reason := <-stop:
			logf("%s, shutting down", reason)
		case err := <-h.etcdErr():
			logf("error: etcd failed: %v; shutting down", err)
			exitCode = 1
		}
	}
	if !h.shutdown() && exitCode == 0 {
		exitCode = 1
	}
	return exitCode
}

type harness struct {
	opts    *options
	rootDir string
	tb      *harnessTB

	stopping atomic.Bool

	mu        sync.Mutex // guards etcd, server, forwarder
	etcd      *etcdServer
	server    *kubeapiservertesting.TestServer
	forwarder net.Listener
	serverURL string

	saKeysBefore map[string]bool
	// The signing keys that appeared while this harness' own kube-apiserver started: the
	// only ones it removes (another harness starting meanwhile has its own, still in use).
	ownSAKeys map[string]bool

	stopControllers func() // guarded by mu; set once the controllers run
}

func (h *harness) etcdErr() <-chan error {
	if h.etcd == nil {
		return nil
	}
	return h.etcd.e.Err()
}

func (h *harness) start(deadline time.Time) error {
	etcdDir := filepath.Join(h.rootDir, "etcd")
	level := zap.NewAtomicLevelAt(zap.ErrorLevel)
	if h.opts.verbose {
		level.SetLevel(zap.InfoLevel)
	}
	e, etcdURL, err := startEtcd(etcdDir, level, time.Until(deadline))
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.etcd = &etcdServer{e: e, level: level}
	h.mu.Unlock()
	logf("etcd ready at %s", etcdURL)

	bindIP := net.ParseIP(h.opts.bind)
	var extraIPs []net.IP
	if !bindIP.IsUnspecified() {
		extraIPs = append(extraIPs, bindIP)
	} else if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				extraIPs = append(extraIPs, ipn.IP)
			}
		}
	}
	pkiDir := filepath.Join(h.rootDir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return err
	}
	p, err := newPKI(pkiDir, extraIPs)
	if err != nil {
		return err
	}

	flags := []string{
		"--tls-cert-file=" + p.ServingCertFn,
		"--tls-private-key-file=" + p.ServingKeyFn,
		"--client-ca-file=" + p.ClientCAFileFn,
		// With our own serving cert the test server's self-signed apiserver.crt is never
		// written, yet the peer proxy (one apiserver talking to another of a different
		// version) would load it as its CA. A single apiserver has no peers.
		"--feature-gates=UnknownVersionInteroperabilityProxy=false",
	}
	if h.opts.authzMode != "" {
		flags = append(flags, "--authorization-mode="+h.opts.authzMode)
	}
	flags = append(flags, h.opts.apiserverArgs...)

	storage := storagebackend.NewDefaultConfig(path.Join("opsplane-e2e-"+randomHex(8), "registry"), nil)
	storage.Transport.ServerList = []string{etcdURL}

	instance := kubeapiservertesting.NewDefaultTestServerOptions()
	// The invariant checks scrape metrics for test assertions; useless here.
	instance.DisableInvariantChecks = true

	var result kubeapiservertesting.TestServer
	var startErr error
	done := runGuarded(h.tb, func() {
		result, startErr = kubeapiservertesting.StartTestServer(h.tb, instance, flags, storage)
	})
	own := map[string]bool{}
	for fn := range listSAKeyFiles() {
		if h.saKeysBefore != nil && !h.saKeysBefore[fn] {
			own[fn] = true
		}
	}
	h.mu.Lock()
	h.ownSAKeys = own
	h.mu.Unlock()
	if err := <-done; err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	if startErr != nil {
		return fmt.Errorf("kube-apiserver: %w", startErr)
	}
	h.mu.Lock()
	h.server = &result
	h.mu.Unlock()

	port := result.ServerOpts.SecureServing.BindPort
	h.serverURL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if !bindIP.Equal(net.ParseIP("127.0.0.1")) {
		ln, err := startForwarder(bindIP, port)
		if err != nil {
			return err
		}
		h.mu.Lock()
		h.forwarder = ln
		h.mu.Unlock()
		fport := ln.Addr().(*net.TCPAddr).Port
		host := bindIP.String()
		if bindIP.IsUnspecified() {
			host = "127.0.0.1"
		}
		h.serverURL = "https://" + net.JoinHostPort(host, strconv.Itoa(fport))
		logf("forwarding %s to kube-apiserver at 127.0.0.1:%d", ln.Addr(), port)
	}

	kubeconfig, err := buildKubeconfig(h.serverURL, p, result.ClientConfig.BearerToken)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(h.opts.kubeconfigOut, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := waitReady(kubeconfig, deadline); err != nil {
		return err
	}
	stopControllers, err := startControllers(kubeconfig)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.stopControllers = stopControllers
	h.mu.Unlock()
	return nil
}

// waitReady checks the server through the written kubeconfig's admin
// credential: /readyz must return ok and the default namespace must exist.
func waitReady(kubeconfig []byte, deadline time.Time) error {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.Timeout = 5 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			_, err = client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
			if err == nil {
				cancel()
				return nil
			}
		}
		cancel()
		if err == nil {
			err = fmt.Errorf("/readyz: %q", body)
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	if lastErr == nil {
		return errors.New("startup timeout exceeded before the readiness check could run")
	}
	return fmt.Errorf("not ready before the startup deadline: %v", lastErr)
}

// shutdown stops kube-apiserver and etcd and removes the root temp dir.
// It reports whether everything stopped cleanly.
func (h *harness) shutdown() bool {
	ok := true
	began := time.Now()
	h.stopping.Store(true)
	h.mu.Lock()
	forwarder, server, etcd, stopControllers := h.forwarder, h.server, h.etcd, h.stopControllers
	h.mu.Unlock()
	if stopControllers != nil {
		stopControllers()
	}
	if forwarder != nil {
		_ = forwarder.Close()
	}
	if server != nil && server.TearDownFn != nil {
		if !withTimeout(30*time.Second, server.TearDownFn) {
			logf("warning: kube-apiserver did not stop within 30s")
			ok = false
		}
	}
	if !withTimeout(15*time.Second, h.tb.runCleanups) {
		logf("warning: cleanups did not finish within 15s")
		ok = false
	}
	if etcd != nil {
		if !h.opts.verbose {
			// Closing logs "server closed" errors for every listener.
			etcd.level.SetLevel(zap.FatalLevel)
		}
		if !withTimeout(15*time.Second, etcd.e.Close) {
			logf("warning: etcd did not stop within 15s")
			ok = false
		}
	}
	if err := h.removeTempFiles(); err != nil {
		logf("warning: %v", err)
		ok = false
	}
	logf("stopped in %.1fs", time.Since(began).Seconds())
	return ok
}

// abortStartup shuts down while start() may still be running. The test
// server cannot be interrupted while it polls for health, so wait a
// little for it and then clean up regardless.
func (h *harness) abortStartup(startDone <-chan error) {
	h.stopping.Store(true)
	// Cancels the test server's context (registered by ktesting.Init).
	withTimeout(15*time.Second, h.tb.runCleanups)
	select {
	case <-startDone:
	case <-time.After(5 * time.Second):
	}
	h.shutdown()
}

// removeTempFiles removes the root temp dir and, if StartTestServer did
// not get to remove it, the service account signing key it writes to the
// hard-coded /tmp/insecure_test_key* — only the one that appeared while
// this harness started, never a key of another harness starting now (that
// removal made the other's kube-apiserver fail to start).
func (h *harness) removeTempFiles() error {
	h.mu.Lock()
	own := h.ownSAKeys
	h.mu.Unlock()
	for fn := range own {
		_ = os.Remove(fn)
	}
	if err := os.RemoveAll(h.rootDir); err != nil {
		return fmt.Errorf("remove %s: %w", h.rootDir, err)
	}
	return nil
}

func listSAKeyFiles() map[string]bool {
	m := map[string]bool{}
	matches, _ := filepath.Glob("/tmp/insecure_test_key*")
	for _, fn := range matches {
		m[fn] = true
	}
	return m
}

func withTimeout(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func writeFileAtomic(fn string, data []byte, mode os.FileMode) error {
	tmp := fmt.Sprintf("%s.tmp-%d", fn, os.Getpid())
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, fn); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
