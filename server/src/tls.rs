//! TLS termination with rustls (ring provider, no OpenSSL).
//!
//! [`TlsAcceptor::load`] reads the PEM files of a [`TlsConfig`] (certificate chain; PKCS#8,
//! PKCS#1 RSA or SEC1 EC key; optional client CA), pins the protocol versions and offers
//! ALPN `h2` and `http/1.1`. [`TlsAcceptor::reload`] re-reads the files (SIGHUP): new
//! connections get the new certificate, open ones keep theirs, a bad file keeps the old.

use std::sync::{Arc, RwLock};

use cello_config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::error::{Error, Result};

/// The verified client certificate of a mutual-TLS connection, on every request of it
/// (a request extension).
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// The subject as an RFC 4514 string (`CN=client,O=Example`), most specific RDN first.
    pub subject: Arc<str>,
}

/// The listener's TLS side: the current rustls config, swappable on reload.
pub struct TlsAcceptor {
    config: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("cert", &self.config.cert_path)
            .finish()
    }
}

impl TlsAcceptor {
    /// Read the files of `config` and build the rustls config; the error names the file.
    pub fn load(config: &TlsConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            current: RwLock::new(Arc::new(server_config(config)?)),
            config: config.clone(),
        })
    }

    /// Re-read the certificate, key and CA. On failure the old ones stay in use.
    pub fn reload(&self) -> Result<()> {
        let fresh = Arc::new(server_config(&self.config)?);
        match self.current.write() {
            Ok(mut cur) => *cur = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokio_rustls::TlsAcceptor::from(cfg)
    }
}

fn tls_err(what: impl std::fmt::Display) -> Error {
    Error::Tls(what.to_string())
}

fn read_certs(label: &str, path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(format!("{label} {path:?}: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{label} {path:?}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{label} {path:?} holds no PEM certificate")));
    }
    Ok(certs)
}

fn server_config(cfg: &TlsConfig) -> Result<rustls::ServerConfig> {
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [("1.2", &rustls::version::TLS12), ("1.3", &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| *v >= cfg.min_version.as_str() && *v <= cfg.max_version.as_str())
            .map(|(_, p)| p)
            .collect();
    let mut out = build_config(cfg, &versions)?;
    out.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(out)
}

/// The same certificate for QUIC: TLS 1.3 only (QUIC has no other), ALPN `h3`.
pub fn quic_rustls_config(cfg: &TlsConfig) -> Result<rustls::ServerConfig> {
    let mut out = build_config(cfg, &[&rustls::version::TLS13])?;
    out.alpn_protocols = vec![b"h3".to_vec()];
    Ok(out)
}

fn build_config(
    cfg: &TlsConfig,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(tls_err)?;
    let builder = match &cfg.ca_path {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("ca_path", ca)? {
                roots.add(c).map_err(|e| tls_err(format!("ca_path {ca:?}: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // Without `require_client_cert` a certificate is asked for and verified if sent.
            let verifier = if cfg.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(tls_err)?)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = read_certs("cert_path", &cfg.cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_path)
        .map_err(|e| tls_err(format!("key_path {:?}: {e}", cfg.key_path)))?;
    builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(format!("cert_path/key_path: {e}")))
}

/// The subject of a connection's client certificate, if it presented one.
pub fn client_cert(conn: &rustls::ServerConnection) -> Option<ClientCert> {
    cert_subject(conn.peer_certificates()?.first()?)
}

/// The subject of a (verified) DER certificate.
pub fn cert_subject(der: &CertificateDer<'_>) -> Option<ClientCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(ClientCert {
        subject: rfc4514(cert.subject()).into(),
    })
}

/// RFC 4514 form: RDNs last-to-first, `,` between them, `+` inside a multi-valued one.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let key = match x509_parser::objects::oid2abbrev(atv.attr_type(), registry) {
                        Ok(k) if k != "Email" => k.to_owned(),
                        _ => atv.attr_type().to_id_string(),
                    };
                    let value = atv.as_str().map_or_else(|_| String::from("#"), escape);
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cello-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_rsa_pkcs8_and_ec_keys_and_refuses_garbage() {
        let dir = tmpdir("keys");
        for (tag, alg) in [
            ("ec", &rcgen::PKCS_ECDSA_P256_SHA256),
            ("ed", &rcgen::PKCS_ED25519),
            ("rsa", &rcgen::PKCS_RSA_SHA256),
        ] {
            let Ok(key) = rcgen::KeyPair::generate_for(alg) else {
                // ring cannot generate RSA keys: covered by the Python tests (trustme).
                continue;
            };
            let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let cfg = TlsConfig {
                cert_path: write(&dir, &format!("{tag}.crt"), &cert.pem()),
                key_path: write(&dir, &format!("{tag}.key"), &key.serialize_pem()),
                ..TlsConfig::default()
            };
            let acc = TlsAcceptor::load(&cfg).unwrap();
            acc.reload().unwrap();
        }
        let bad = TlsConfig {
            cert_path: write(&dir, "bad.crt", "not a certificate"),
            key_path: write(&dir, "bad.key", "nope"),
            ..TlsConfig::default()
        };
        let err = TlsAcceptor::load(&bad).unwrap_err().to_string();
        assert!(err.contains("cert_path"), "{err}");
    }

    #[test]
    fn subject_is_rfc4514() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        assert_eq!(rfc4514(parsed.subject()), "CN=alice,O=Acme\\, Inc");
    }
}
