package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// freeLoopbackPorts returns n distinct TCP ports on 127.0.0.1 that were free
// a moment ago. There is a small race until etcd binds them; startEtcd
// retries with fresh ports if binding fails.
func freeLoopbackPorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startEtcd starts a single-member embedded etcd listening on loopback
// ports only, with its data below dir. It returns the server and its
// client URL.
// Its logs go to stderr at the given (adjustable) level.
func startEtcd(dir string, level zap.AtomicLevel, timeout time.Duration) (*embed.Etcd, string, error) {
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		ports, err := freeLoopbackPorts(2)
		if err != nil {
			return nil, "", fmt.Errorf("pick free ports: %w", err)
		}
		clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))}
		peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))}

		cfg := embed.NewConfig()
		cfg.Name = "opsplane-e2e"
		cfg.Dir = filepath.Join(dir, fmt.Sprintf("etcd-%d", attempt))
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, "", err
		}
		// Throw-away single member: no need to fsync.
		cfg.UnsafeNoFsync = true
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.Logger = "zap"
		cfg.LogOutputs = []string{"stderr"}
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(zapcore.NewCore(
			zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
			zapcore.Lock(os.Stderr), level)).Named("etcd"))

		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			logf("etcd start attempt %d failed: %v", attempt, err)
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			return e, clientURL.String(), nil
		case err := <-e.Err():
			e.Close()
			lastErr = fmt.Errorf("etcd failed while starting: %v", err)
		case <-time.After(timeout):
			e.Server.Stop()
			e.Close()
			return nil, "", fmt.Errorf("etcd not ready after %s", timeout)
		}
	}
	return nil, "", fmt.Errorf("could not start etcd: %w", lastErr)
}
