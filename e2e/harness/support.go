package main

import (
	"io"
	"net"
	"strconv"
	"sync"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

type etcdServer struct {
	e     *embed.Etcd
	level zap.AtomicLevel
}

const (
	clusterName    = "opsplane-e2e"
	contextAdmin   = "opsplane-e2e"
	contextToken   = "opsplane-e2e-loopback-token"
	userAdmin      = "opsplane-e2e-admin"
	userLoopbackTk = "opsplane-e2e-loopback-token"
)

// buildKubeconfig returns a kubeconfig whose current context uses the
// admin client certificate (CN=opsplane-e2e-admin, O=system:masters).
// A second context, opsplane-e2e-loopback-token, carries kube-apiserver's
// own loopback bearer token (user system:apiserver, also system:masters),
// handy for curl -H "Authorization: Bearer ...".
func buildKubeconfig(server string, p *pki, loopbackToken string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cluster := clientcmdapi.NewCluster()
	cluster.Server = server
	cluster.CertificateAuthorityData = p.ServingCACert
	cfg.Clusters[clusterName] = cluster

	admin := clientcmdapi.NewAuthInfo()
	admin.ClientCertificateData = p.AdminCert
	admin.ClientKeyData = p.AdminKey
	cfg.AuthInfos[userAdmin] = admin

	ctx := clientcmdapi.NewContext()
	ctx.Cluster = clusterName
	ctx.AuthInfo = userAdmin
	ctx.Namespace = "default"
	cfg.Contexts[contextAdmin] = ctx

	if loopbackToken != "" {
		tok := clientcmdapi.NewAuthInfo()
		tok.Token = loopbackToken
		cfg.AuthInfos[userLoopbackTk] = tok
		tctx := clientcmdapi.NewContext()
		tctx.Cluster = clusterName
		tctx.AuthInfo = userLoopbackTk
		tctx.Namespace = "default"
		cfg.Contexts[contextToken] = tctx
	}
	cfg.CurrentContext = contextAdmin
	return clientcmd.Write(*cfg)
}

// startForwarder accepts TCP connections on bindIP (random port) and pipes
// them to kube-apiserver on 127.0.0.1:port. TLS passes through untouched;
// the serving certificate includes bindIP (or all interface addresses for
// 0.0.0.0/::). Closing the returned listener stops accepting.
func startForwarder(bindIP net.IP, port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(bindIP.String(), "0"))
	if err != nil {
		return nil, err
	}
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go pipe(in, target)
		}
	}()
	return ln, nil
}

func pipe(in net.Conn, target string) {
	defer in.Close()
	out, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer out.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	go cp(out, in)
	go cp(in, out)
	wg.Wait()
}
