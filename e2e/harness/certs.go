package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the certificates the harness generates for one run:
//   - a serving CA and a kube-apiserver serving certificate signed by it,
//   - a client CA (passed as --client-ca-file) and an admin client
//     certificate signed by it (O=system:masters, i.e. cluster-admin).
type pki struct {
	ServingCACert  []byte // PEM
	ServingCert    []byte // PEM
	ServingKey     []byte // PEM (PKCS#8)
	ClientCACert   []byte // PEM
	AdminCert      []byte // PEM
	AdminKey       []byte // PEM (PKCS#8)
	ServingCertFn  string
	ServingKeyFn   string
	ClientCAFileFn string
}

// servingPairName is kube-apiserver's default --tls-cert-file pair name
// inside --cert-dir; the test server also uses <cert-dir>/apiserver.crt as
// the peer proxy CA file.
const servingPairName = "apiserver"

const (
	adminUser  = "opsplane-e2e-admin"
	adminGroup = "system:masters"
)

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 62)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

func newCA(cn string, now time.Time) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

func (ca *keyPair) issue(tmpl *x509.Certificate) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// newPKI generates all certificates and writes the files kube-apiserver
// needs (serving cert/key, client CA) into dir.
func newPKI(dir string, extraIPs []net.IP) (*pki, error) {
	now := time.Now()
	servingCA, err := newCA("opsplane-e2e-serving-ca", now)
	if err != nil {
		return nil, fmt.Errorf("serving CA: %w", err)
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")}
	for _, ip := range extraIPs {
		dup := false
		for _, have := range ips {
			if have.Equal(ip) {
				dup = true
				break
			}
		}
		if !dup {
			ips = append(ips, ip)
		}
	}
	serving, err := servingCA.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: ips,
	})
	if err != nil {
		return nil, fmt.Errorf("serving cert: %w", err)
	}
	clientCA, err := newCA("opsplane-e2e-client-ca", now)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	admin, err := clientCA.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: adminUser, Organization: []string{adminGroup}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("admin client cert: %w", err)
	}

	p := &pki{
		ServingCACert:  certPEM(servingCA.cert),
		ServingCert:    append(certPEM(serving.cert), certPEM(servingCA.cert)...),
		ClientCACert:   certPEM(clientCA.cert),
		AdminCert:      certPEM(admin.cert),
		ServingCertFn:  filepath.Join(dir, servingPairName+".crt"),
		ServingKeyFn:   filepath.Join(dir, servingPairName+".key"),
		ClientCAFileFn: filepath.Join(dir, "client-ca.crt"),
	}
	if p.ServingKey, err = keyPEM(serving.key); err != nil {
		return nil, err
	}
	if p.AdminKey, err = keyPEM(admin.key); err != nil {
		return nil, err
	}
	for fn, data := range map[string][]byte{
		p.ServingCertFn:  p.ServingCert,
		p.ServingKeyFn:   p.ServingKey,
		p.ClientCAFileFn: p.ClientCACert,
	} {
		if err := os.WriteFile(fn, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}
