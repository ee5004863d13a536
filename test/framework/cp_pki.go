package framework

import (
	"crypto"
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

// controlPlanePKI holds the paths of every certificate and key the control
// plane uses, all under one directory. ECDSA P-256 keys throughout: generating
// them takes microseconds where RSA takes noticeable time, and every component
// (including service-account token signing, ES256) accepts them.
type controlPlanePKI struct {
	caCert, caKey           string
	servingCert, servingKey string // 127.0.0.1/localhost; apiserver, controller-manager, scheduler
	saKey, saPub            string // service-account token signing key pair
	// Front proxy (aggregation layer): a separate CA, as kubeadm does, whose
	// client certificate the apiserver presents to aggregated apiservers and
	// which delegated authentication in the controller-manager and scheduler
	// expects in the extension-apiserver-authentication ConfigMap.
	frontProxyCACert                          string
	frontProxyClientCert, frontProxyClientKey string

	// PEM contents the kubeconfigs embed.
	caPEM                                             []byte
	adminCertPEM, adminKeyPEM                         []byte
	controllerManagerCertPEM, controllerManagerKeyPEM []byte
	schedulerCertPEM, schedulerKeyPEM                 []byte
}

// frontProxyClientName is the CN of the front-proxy client certificate, the
// only name the apiserver accepts request headers from.
const frontProxyClientName = "front-proxy-client"

// certValidity is long enough for any test run, short enough that a leaked
// test CA is useless soon.
const certValidity = 7 * 24 * time.Hour

// generatePKI writes a fresh CA, the serving certificate, the service-account
// key pair into dir and keeps the client certificates for the kubeconfigs.
func generatePKI(dir string) (*controlPlanePKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create PKI directory: %w", err)
	}
	p := &controlPlanePKI{
		caCert:      filepath.Join(dir, "ca.crt"),
		caKey:       filepath.Join(dir, "ca.key"),
		servingCert: filepath.Join(dir, "serving.crt"),
		servingKey:  filepath.Join(dir, "serving.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		saPub:       filepath.Join(dir, "sa.pub"),

		frontProxyCACert:     filepath.Join(dir, "front-proxy-ca.crt"),
		frontProxyClientCert: filepath.Join(dir, "front-proxy-client.crt"),
		frontProxyClientKey:  filepath.Join(dir, "front-proxy-client.key"),
	}
	now := time.Now()

	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "nfs-provisioner-test-ca"},
		NotBefore:             now.Add(-time.Hour), // tolerate small clock skew
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, ca, err := sign(caTmpl, caKey.Public(), nil, caKey)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	p.caPEM = certPEM(caDER)
	if err := writePEMPair(p.caCert, p.caPEM, p.caKey, caKey); err != nil {
		return nil, err
	}

	// One serving certificate for the three secure ports. The in-cluster names
	// and the first service IP are there so that the certificate also matches
	// what the apiserver advertises as the "kubernetes" Service.
	servingKey, err := newKey()
	if err != nil {
		return nil, err
	}
	servingDER, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(certValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)},
	}, servingKey.Public(), ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign serving certificate: %w", err)
	}
	if err := writePEMPair(p.servingCert, certPEM(servingDER), p.servingKey, servingKey); err != nil {
		return nil, err
	}

	// Client certificates: the apiserver maps CN to the user name and O to
	// groups. system:masters bypasses RBAC; the two component identities get
	// their permissions from the bootstrap RBAC policy.
	clients := []struct {
		cn, org         string
		certOut, keyOut *[]byte
	}{
		{"kubernetes-admin", "system:masters", &p.adminCertPEM, &p.adminKeyPEM},
		{"system:kube-controller-manager", "", &p.controllerManagerCertPEM, &p.controllerManagerKeyPEM},
		{"system:kube-scheduler", "", &p.schedulerCertPEM, &p.schedulerKeyPEM},
	}
	for _, c := range clients {
		key, err := newKey()
		if err != nil {
			return nil, err
		}
		subject := pkix.Name{CommonName: c.cn}
		if c.org != "" {
			subject.Organization = []string{c.org}
		}
		der, _, err := sign(&x509.Certificate{
			Subject:     subject,
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.Add(certValidity),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, key.Public(), ca, caKey)
		if err != nil {
			return nil, fmt.Errorf("sign client certificate for %s: %w", c.cn, err)
		}
		keyPEM, err := privateKeyPEM(key)
		if err != nil {
			return nil, err
		}
		*c.certOut, *c.keyOut = certPEM(der), keyPEM
	}

	fpCAKey, err := newKey()
	if err != nil {
		return nil, err
	}
	fpCADER, fpCA, err := sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "front-proxy-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, fpCAKey.Public(), nil, fpCAKey)
	if err != nil {
		return nil, fmt.Errorf("self-sign front-proxy CA: %w", err)
	}
	if err := os.WriteFile(p.frontProxyCACert, certPEM(fpCADER), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", p.frontProxyCACert, err)
	}
	fpKey, err := newKey()
	if err != nil {
		return nil, err
	}
	fpDER, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: frontProxyClientName},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(certValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, fpKey.Public(), fpCA, fpCAKey)
	if err != nil {
		return nil, fmt.Errorf("sign front-proxy client certificate: %w", err)
	}
	if err := writePEMPair(p.frontProxyClientCert, certPEM(fpDER), p.frontProxyClientKey, fpKey); err != nil {
		return nil, err
	}

	// Service-account tokens: the apiserver signs them with sa.key and
	// verifies them with sa.pub; the controller-manager signs legacy
	// secret-based tokens with sa.key.
	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal service-account public key: %w", err)
	}
	saKeyPEM, err := privateKeyPEM(saKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.saKey, saKeyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write service-account key: %w", err)
	}
	if err := os.WriteFile(p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}), 0o644); err != nil {
		return nil, fmt.Errorf("write service-account public key: %w", err)
	}
	return p, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ECDSA key: %w", err)
	}
	return k, nil
}

// sign creates a certificate from tmpl for pub, signed by parent/parentKey
// (self-signed when parent is nil).
func sign(tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return der, cert, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func privateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func writePEMPair(certPath string, cert []byte, keyPath string, key crypto.Signer) error {
	keyPEM, err := privateKeyPEM(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, cert, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", certPath, err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", keyPath, err)
	}
	return nil
}
