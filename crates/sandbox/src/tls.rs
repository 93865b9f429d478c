//! The sandbox's certificate authority and serving certificate, made with
//! rcgen at start-up: a self-signed CA (published in every namespace's
//! `kube-root-ca.crt` and in the kubeconfig's `certificate-authority-data`)
//! and a server certificate for `localhost` and `127.0.0.1` signed by it.
//! rustls uses the aws-lc-rs provider, the only one in the binary.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// CA and server certificate.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server's chain (leaf, CA), DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The server's private key, PKCS#8 DER.
    pub key: Vec<u8>,
}

/// Generates the CA and a serving certificate for `hosts`.
pub fn generate(hosts: &[String]) -> Result<Pki, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "lifeboat-sandbox-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut leaf = CertificateParams::new(hosts.to_vec())?;
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let leaf_key = KeyPair::generate()?;
    let cert = leaf.signed_by(&leaf_key, &ca)?;
    Ok(Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone(), ca.der().clone()],
        key: leaf_key.serialize_der(),
    })
}

/// A rustls server configuration for the certificate (HTTP/1.1 only).
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            pki.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone())),
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
